"""ONNX Runtime backend (``platform: "onnxruntime_onnx"`` or ``backend: "onnxruntime"``; file ``model.onnx``).

Runs on the CUDA execution provider when the instance group asks for a GPU (or AUTO) and onnxruntime
has it, otherwise on the CPU provider. The config's inputs and outputs must name the graph's tensors,
with the same element types and compatible shapes; a mismatch makes the model UNAVAILABLE at load
rather than failing every request. ONNX files are protobuf: loading one runs no Python code.
Parameters: ``intra_op_threads`` (default 1: on a few shared cores, one thread per instance wins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tailmark.protos import model_config_pb2 as mc
from tailmark.protos.codec import numpy_dtype
from tailmark.server.backends.base import Tensors
from tailmark.server.config import ConfigError, config_type_to_kserve, parameter, tensor_specs

MODEL_FILE = "model.onnx"
CUDA = "CUDAExecutionProvider"

# ONNX Runtime's type strings, as InferenceSession.get_inputs() reports them
ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def providers_for(config: mc.ModelConfig, available: list[str]) -> list[str]:
    """CUDA first when the config allows a GPU and onnxruntime was built with it; CPU always last."""
    kinds = {group.kind for group in config.instance_group}
    wants_gpu = bool(kinds & {mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO})
    return ([CUDA] if wants_gpu and CUDA in available else []) + ["CPUExecutionProvider"]


def check_signature(config: mc.ModelConfig, graph_inputs, graph_outputs, *, source: str) -> None:
    """Refuse a config whose tensors do not match the graph's (names, element types, shapes)."""
    for specs, graph, kind in (
        (tensor_specs(config, outputs=False), graph_inputs, "input"),
        (tensor_specs(config, outputs=True), graph_outputs, "output"),
    ):
        by_name = {node.name: node for node in graph}
        for spec in specs:
            node = by_name.get(spec.name)
            if node is None:
                raise ConfigError(f"{source}: {kind} {spec.name!r} is not in the graph (it has {sorted(by_name)})")
            datatype = ORT_TYPES.get(node.type)
            if datatype != spec.datatype:
                raise ConfigError(
                    f"{source}: {kind} {spec.name!r} is {spec.datatype} in config.pbtxt, {node.type} in the graph"
                )
            if not _shapes_compatible(spec.shape, node.shape):
                want = list(spec.shape)
                raise ConfigError(
                    f"{source}: {kind} {spec.name!r} has shape {want} in config.pbtxt, {node.shape} in the graph"
                )


def _shapes_compatible(config_shape: tuple[int, ...], graph_shape) -> bool:
    if graph_shape is None:  # unknown rank
        return True
    if len(config_shape) != len(graph_shape):
        return False
    # a symbolic graph dimension (a string, or None) accepts anything; a fixed one needs the same or -1
    return all(not isinstance(g, int) or c in (-1, g) for c, g in zip(config_shape, graph_shape))


class OnnxRuntimeBackend:
    runs_inline = False

    def __init__(self, config: mc.ModelConfig, version_dir: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("onnxruntime is not installed (pip install 'tailmark[onnx]')") from None
        path = version_dir / (config.default_model_filename or MODEL_FILE)
        if not path.is_file():
            raise ConfigError(f"{version_dir}: no model file {path.name}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameter(config, "intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.providers = providers_for(config, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=self.providers)
        except Exception as exc:  # corrupt or unsupported graph
            raise ConfigError(f"{path}: cannot load: {exc}") from None
        check_signature(config, self._session.get_inputs(), self._session.get_outputs(), source=str(path))
        self._outputs = [o.name for o in config.output]
        self._dtypes = {o.name: numpy_dtype(config_type_to_kserve(o.data_type)) for o in config.output}

    def execute(self, inputs: Tensors) -> Tensors:
        values = self._session.run(self._outputs, inputs)
        return {name: np.asarray(value, dtype=self._dtypes[name]) for name, value in zip(self._outputs, values)}

    def close(self) -> None:
        self._session = None
