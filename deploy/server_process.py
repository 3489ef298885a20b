"""Another project's server as a child process, from its own cached venv (Triton here; MLServer and KServe in
the tests).

Their pins differ from tailmark's, so each gets a venv built once from PyPI and cached (under
``~/.cache/tailmark/`` or ``$XDG_CACHE_HOME``), marked ready only once every package is in.
``ServerProcess`` starts the server on loopback ports, waits until it answers, and stops it as a context
manager; its output goes to a log file, whose tail is the error when it does not start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def cache_directory() -> Path:
    """Where the venvs are kept: ``$XDG_CACHE_HOME/tailmark`` or ``~/.cache/tailmark``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tailmark"


def base_python() -> str:
    """The interpreter behind this one's venv, if any: the one a new venv is built from."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(venv: Path, packages: Sequence[str], *, name: str, error: type[Exception], timeout_s: float) -> Path:
    """``venv`` with ``packages`` installed, built on first use; ``error`` ("cannot build the {name} venv")
    if that fails. A half-built venv (no ready marker: it is written last) is built again."""
    marker = venv / ".tailmark-ready"
    if marker.is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[-800:]
        shutil.rmtree(venv, ignore_errors=True)
        raise error(f"cannot build the {name} venv: {exc}: {detail}") from None
    marker.write_text(" ".join(packages) + "\n")
    return venv


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server child process; a context manager. Subclasses call ``_start`` and then ``_wait_ready``."""

    process: subprocess.Popen
    log_path: Path

    def _start(self, args: Sequence[str], *, log_path: Path, env: Mapping[str, str], cwd: Path | None = None) -> None:
        """Start ``args`` with stdout and stderr into ``log_path``."""
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def _wait_ready(
        self, ready: Callable[[], bool], *, timeout_s: float, poll_s: float, what: str, error: type[Exception]
    ) -> None:
        """Poll ``ready()`` every ``poll_s`` until it is true; if the process exits or ``timeout_s`` passes
        first, stop it and raise ``error`` ("{what} did not start:" and the log's tail)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if ready():
                return
            time.sleep(poll_s)
        self.stop()
        raise error(f"{what} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """Terminate the process (killed after 30 s) and close its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
