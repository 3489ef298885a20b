"""MLServer and KServe's Python model server as real KServe-v2 peers (REST and gRPC), each serving one echo
model ``echo`` (FP32 [-1] -> OUTPUT0, the input back).

Each runs from its own venv (their pins differ from tailmark's), built once from PyPI and cached under
``~/.cache/tailmark/`` (or ``$XDG_CACHE_HOME``); where that cannot be done, ``PeerUnavailable`` says why.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PACKAGES = {"mlserver": "mlserver==1.7.1", "kserve": "kserve==0.21.0"}

MLSERVER_RUNTIME = """
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Echo(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [
            ResponseOutput(name="OUTPUT0", datatype=t.datatype, shape=t.shape, data=t.data) for t in payload.inputs
        ]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
"""

KSERVE_MODEL = """
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Echo(Model):
    def __init__(self) -> None:
        super().__init__("echo")
        self.ready = True

    async def get_input_types(self):
        return [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}]

    async def get_output_types(self):
        return [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        outputs = []
        for tensor in payload.inputs:
            array = tensor.as_numpy()
            output = InferOutput(name="OUTPUT0", shape=list(array.shape), datatype=tensor.datatype)
            output.set_data_from_numpy(array, binary_data=False)
            outputs.append(output)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


if __name__ == "__main__":
    ModelServer().start([Echo()])
"""

TENSORS = {
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
}


class PeerUnavailable(RuntimeError):
    """The peer's venv cannot be built here, or the server does not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_venv(kind: str, timeout_s: float = 900) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "tailmark" / f"{kind}-venv-py{sys.version_info.major}.{sys.version_info.minor}"
    marker = venv / ".tailmark-ready"
    if marker.is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    try:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PACKAGES[kind]]
        subprocess.run(pip, check=True, capture_output=True, timeout=timeout_s)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[-800:]
        shutil.rmtree(venv, ignore_errors=True)
        raise PeerUnavailable(f"cannot build the {kind} venv: {exc}: {detail}") from None
    marker.write_text(PACKAGES[kind] + "\n")
    return venv


class PeerProcess:
    """``with PeerProcess("mlserver" | "kserve", workdir) as peer``: ``peer.http_target``, ``peer.grpc_target``."""

    def __init__(self, kind: str, workdir: Path, startup_timeout_s: float = 120) -> None:
        venv = ensure_venv(kind)
        self.http_port, self.grpc_port = _free_port(), _free_port()
        python = str(venv / "bin" / "python")
        if kind == "mlserver":
            model = workdir / "echo"
            model.mkdir(parents=True, exist_ok=True)
            (model / "echo_runtime.py").write_text(MLSERVER_RUNTIME)
            (model / "model-settings.json").write_text(
                json.dumps({"name": "echo", "implementation": "echo_runtime.Echo", **TENSORS})
            )
            settings = {"http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": _free_port()}
            (workdir / "settings.json").write_text(json.dumps({**settings, "parallel_workers": 0, "host": "127.0.0.1"}))
            args = [str(venv / "bin" / "mlserver"), "start", str(workdir)]
        else:
            (workdir / "echo_kserve.py").write_text(KSERVE_MODEL)
            ports = ["--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port)]
            args = [python, str(workdir / "echo_kserve.py"), *ports]
        self.log_path = workdir / f"{kind}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.process = subprocess.Popen(args, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(startup_timeout_s)

    @property
    def http_target(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.http_target}/v2/models/echo/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise PeerUnavailable(f"the peer did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
