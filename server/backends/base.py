"""The backend seam: what a model runtime must provide, and how one is chosen for a config."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from tailmark.protos import model_config_pb2 as mc
from tailmark.server.config import ConfigError

Tensors = dict[str, np.ndarray]


class Backend(Protocol):
    # True when execute() costs less than a hop to a worker thread, so it may run on the event loop
    runs_inline: bool

    def execute(self, inputs: Tensors) -> Tensors:
        """Run one (possibly batched) request; inputs and outputs are keyed by tensor name."""
        ...

    def close(self) -> None: ...


def load_backend(config: mc.ModelConfig, model_dir: Path, version_dir: Path) -> Backend:
    """Instantiate the runtime a config names (``backend`` or Triton's ``platform``)."""
    kind = config.backend or config.platform
    match kind:
        case "identity" | "null" | "sleep" | "error":
            from tailmark.server.backends import synthetic

            return synthetic.create(kind, config)
        case "synthetic_llm":
            from tailmark.server.generative.backend import GenerativeBackend

            return GenerativeBackend(config)
        case "tiny_lm":  # a trained lm export (tailmark train lm --export-to)
            from tailmark.server.generative.lm_backend import TinyLmBackend

            return TinyLmBackend(config, model_dir, version_dir)
        case "pytorch" | "pytorch_libtorch" | "torch":
            from tailmark.server.backends.torch_backend import TorchBackend

            return TorchBackend(config, version_dir)
        case "onnxruntime" | "onnxruntime_onnx":
            from tailmark.server.backends.onnx_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend(config, version_dir)
        case "tensorrt" | "tensorrt_plan":
            from tailmark.server.backends.tensorrt_backend import TensorRTBackend

            return TensorRTBackend(config, version_dir)
        case "":
            raise ConfigError(f"{model_dir}/config.pbtxt: no backend or platform given")
        case _:
            raise ConfigError(f"{model_dir}/config.pbtxt: backend {kind!r} is not supported by tailmark serve")
