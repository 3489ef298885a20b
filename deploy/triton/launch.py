"""Run the real ``tritonserver`` binary from the ``nvidia-pytriton`` wheel on a model repository (CPU).

The wheel bundles Triton (2.51) with only the python backend. Three traps, each handled here:

- The wheel pins numpy < 2, and the python stub takes its packages from the first ``python`` on PATH:
  with numpy 2 the models run but every output comes back empty, with no error. So Triton gets its own
  small venv (``nvidia-pytriton`` + ``onnxruntime``, numpy 1.26), built once and cached under
  ``~/.cache/tailmark/`` (or ``$TAILMARK_TRITON_VENV``), never tailmark's.
- The stub links ``libpython3.X.so``: it must load the same CPython that built the venv, so
  LD_LIBRARY_PATH starts with that interpreter's LIBDIR, then the wheel's ``nvidia_pytriton.libs``.
- The binary expects a backend directory laid out as ``<dir>/python/{libtriton_python.so,
  triton_python_backend_utils.py, triton_python_backend_stub}``; one is assembled from the wheel.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

PYTRITON = "nvidia-pytriton==0.7.0"
STUB_PACKAGES = (PYTRITON, "onnxruntime", "numpy<2")


class TritonUnavailable(RuntimeError):
    """Triton cannot be run here (the wheel cannot be installed, or the binary does not start)."""


def venv_path() -> Path:
    configured = os.environ.get("TAILMARK_TRITON_VENV")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return cache / "tailmark" / f"triton-venv-py{version}-pytriton0.7.0"


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(timeout_s: float = 600) -> Path:
    """The cached venv holding Triton and its stub's packages, built on first use (about 40 s)."""
    venv = venv_path()
    marker = venv / ".tailmark-ready"
    if marker.is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # a half-built one: the marker is written last
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *STUB_PACKAGES],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[-800:]
        shutil.rmtree(venv, ignore_errors=True)
        raise TritonUnavailable(f"cannot build the Triton venv: {exc}: {detail}") from None
    marker.write_text(" ".join(STUB_PACKAGES) + "\n")
    return venv


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise TritonUnavailable(f"{venv}: no site-packages")
    return found[0]


def backend_directory(venv: Path) -> Path:
    """``<venv>/tailmark-backends/python/`` assembled from the wheel's files."""
    server = _site_packages(venv) / "pytriton" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonUnavailable(f"the wheel has no python stub for Python {version}")
    target = venv / "tailmark-backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in (
        server / "backends" / "python" / "libtriton_python.so",
        server / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        link = target / source.name
        if not link.exists():
            link.symlink_to(source)
    return target.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TritonProcess:
    """``tritonserver`` serving ``repository`` on loopback ports; a context manager. Logs go to ``log_path``."""

    def __init__(
        self, repository: Path, *, log_path: Path, extra: tuple[str, ...] = (), startup_timeout_s: float = 120
    ):
        venv = ensure_venv()
        site = _site_packages(venv)
        binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(p for p in (libdir, str(site / "nvidia_pytriton.libs")) if p),
            "PATH": os.pathsep.join((str(venv / "bin"), os.environ.get("PATH", ""))),
        }
        env.pop("PYTHONPATH", None)
        args = [
            str(binary),
            "--model-repository", str(repository),
            "--backend-directory", str(backend_directory(venv)),
            "--grpc-port", str(self.grpc_port),
            "--http-port", str(self.http_port),
            "--metrics-port", str(self.metrics_port),
            "--allow-http", "true",
            *extra,
        ]  # fmt: skip
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(startup_timeout_s)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_target(self) -> str:
        """The REST endpoint (``--transport http``)."""
        return f"http://127.0.0.1:{self.http_port}"

    def _wait_ready(self, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(self.target)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if client.is_server_live():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        self.stop()
        raise TritonUnavailable(f"tritonserver did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> TritonProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
