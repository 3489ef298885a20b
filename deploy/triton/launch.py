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

It listens on loopback only. A trained lm's model.py needs torch in that venv: ``ensure_torch`` adds the pinned
CPU build there on first use only, so serving the other models never waits for it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tailmark.deploy.server_process import ServerProcess, cache_directory, free_port
from tailmark.deploy.server_process import ensure_venv as _ensure_venv

PYTRITON = "nvidia-pytriton==0.7.0"
STUB_PACKAGES = (PYTRITON, "onnxruntime", "numpy<2")
TORCH = "torch==2.13.0"  # for the lm export's model.py only; pinned (the CPU build pip finds beside tailmark's)


class TritonUnavailable(RuntimeError):
    """Triton cannot be run here (the wheel cannot be installed, or the binary does not start)."""


def venv_path() -> Path:
    configured = os.environ.get("TAILMARK_TRITON_VENV")
    if configured:
        return Path(configured)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return cache_directory() / f"triton-venv-py{version}-pytriton0.7.0"


def ensure_venv(timeout_s: float = 600) -> Path:
    """The cached venv holding Triton and its stub's packages, built on first use (about 40 s)."""
    return _ensure_venv(venv_path(), STUB_PACKAGES, name="Triton", error=TritonUnavailable, timeout_s=timeout_s)


def ensure_torch(timeout_s: float = 900) -> Path:
    """Triton's venv with torch added (the trained lm's model.py loads its state_dict with it), installed on
    first use only, so the other Triton models never wait for it (about 40 s from a local wheel, 1 GB)."""
    venv = ensure_venv()
    marker = venv / ".tailmark-torch-ready"
    if marker.is_file():
        return venv
    with open(venv / ".tailmark-torch-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes installing at once would corrupt site-packages
        if marker.is_file():
            return venv
        try:
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", TORCH, "numpy<2"],
                check=True,
                capture_output=True,
                timeout=timeout_s,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[-800:]
            raise TritonUnavailable(f"cannot install {TORCH} into Triton's venv {venv}: {exc}: {detail}") from None
        marker.write_text(TORCH + "\n")
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


class TritonProcess(ServerProcess):
    """``tritonserver`` serving ``repository`` on loopback ports; a context manager. Logs go to ``log_path``."""

    def __init__(
        self, repository: Path, *, log_path: Path, extra: tuple[str, ...] = (), startup_timeout_s: float = 120
    ):
        venv = ensure_venv()
        site = _site_packages(venv)
        binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(p for p in (libdir, str(site / "nvidia_pytriton.libs")) if p),
            "PATH": os.pathsep.join((str(venv / "bin"), os.environ.get("PATH", ""))),
        }
        env.pop("PYTHONPATH", None)
        for attempt in range(3):  # a port free when picked can be taken before Triton binds it: new ports
            self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
            args = [
                str(binary),
                "--model-repository", str(repository),
                "--backend-directory", str(backend_directory(venv)),
                "--grpc-port", str(self.grpc_port),
                "--http-port", str(self.http_port),
                "--metrics-port", str(self.metrics_port),
                "--grpc-address", "127.0.0.1",
                "--http-address", "127.0.0.1",
                "--metrics-address", "127.0.0.1",
                "--allow-http", "true",
                *extra,
            ]  # fmt: skip
            self._start(args, log_path=log_path, env=env)
            try:
                self._wait_until_live(startup_timeout_s)
                return
            except TritonUnavailable as exc:
                if "already in use" not in str(exc) or attempt == 2:
                    raise

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_target(self) -> str:
        """The REST endpoint (``--transport http``)."""
        return f"http://127.0.0.1:{self.http_port}"

    def _wait_until_live(self, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.target)

        def live() -> bool:
            try:
                return client.is_server_live()
            except Exception:  # not listening yet
                return False

        self._wait_ready(live, timeout_s=timeout_s, poll_s=0.2, what="tritonserver", error=TritonUnavailable)
