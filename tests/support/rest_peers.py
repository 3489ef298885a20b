"""MLServer and KServe's Python model server as real KServe-v2 peers (REST and gRPC), each serving one echo
model ``echo`` (FP32 [-1] -> OUTPUT0, the input back).

Each runs from its own venv (their pins differ from tailmark's), built once from PyPI and cached under
``~/.cache/tailmark/`` (or ``$XDG_CACHE_HOME``); where that cannot be done, ``PeerUnavailable`` says why.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

from tailmark.deploy.server_process import ServerProcess, cache_directory, free_port
from tailmark.deploy.server_process import ensure_venv as _ensure_venv

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


def ensure_venv(kind: str, timeout_s: float = 900) -> Path:
    venv = cache_directory() / f"{kind}-venv-py{sys.version_info.major}.{sys.version_info.minor}"
    return _ensure_venv(venv, (PACKAGES[kind],), name=kind, error=PeerUnavailable, timeout_s=timeout_s)


class PeerProcess(ServerProcess):
    """``with PeerProcess("mlserver" | "kserve", workdir) as peer``: ``peer.http_target``, ``peer.grpc_target``."""

    def __init__(self, kind: str, workdir: Path, startup_timeout_s: float = 120) -> None:
        from support import peer_venvs

        peer_venvs.prebuild()  # this session's other peers too, in parallel
        venv = ensure_venv(kind)
        self.http_port, self.grpc_port = free_port(), free_port()
        python = str(venv / "bin" / "python")
        if kind == "mlserver":
            model = workdir / "echo"
            model.mkdir(parents=True, exist_ok=True)
            (model / "echo_runtime.py").write_text(MLSERVER_RUNTIME)
            (model / "model-settings.json").write_text(
                json.dumps({"name": "echo", "implementation": "echo_runtime.Echo", **TENSORS})
            )
            settings = {"http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": free_port()}
            (workdir / "settings.json").write_text(json.dumps({**settings, "parallel_workers": 0, "host": "127.0.0.1"}))
            args = [str(venv / "bin" / "mlserver"), "start", str(workdir)]
        else:
            (workdir / "echo_kserve.py").write_text(KSERVE_MODEL)
            ports = ["--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port)]
            args = [python, str(workdir / "echo_kserve.py"), *ports]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self._start(args, log_path=workdir / f"{kind}.log", env=env, cwd=workdir)
        self._wait_ready(
            self._model_ready, timeout_s=startup_timeout_s, poll_s=0.3, what="the peer", error=PeerUnavailable
        )

    @property
    def http_target(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _model_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_target}/v2/models/echo/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False
