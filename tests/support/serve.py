"""Start a real ``tailmark serve`` process on a free loopback port, and stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerProcess:
    """A ``tailmark serve`` child process; use as a context manager. Output is kept in ``lines``."""

    def __init__(self, repository: Path | None, *extra: str, startup_timeout_s: float = 60.0) -> None:
        args = [sys.executable, "-m", "tailmark", "serve", "--port", "0", *extra]
        if repository is not None:
            args += ["--model-repository", str(repository)]
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.port = self._wait_for_port(startup_timeout_s)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait_for_port(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = LISTENING.search(line)
            if match:
                return int(match.group(2))
        self.process.kill()
        raise RuntimeError("tailmark serve did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()
