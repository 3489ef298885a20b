"""TensorRT backend (``platform: "tensorrt_plan"`` or ``backend: "tensorrt"``; file ``model.plan``).

Written against the name-based API of TensorRT 10 and 11: the engine's I/O tensors are looked up by
name, each request sets its input shapes on an execution context, binds torch CUDA memory by address
and runs ``execute_async_v3`` on a torch stream. Each instance thread has its own context and stream.

TensorRT is imported only when such a model loads. Where it is missing (it has no wheels on PyPI, so
on these machines) or CUDA is, the model is UNAVAILABLE with that reason. The parts that need neither,
the optimization-profile shapes and the binding plan that checks an engine against config.pbtxt, are
plain functions, tested on their own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailmark.protos import model_config_pb2 as mc
from tailmark.server.backends.base import Tensors
from tailmark.server.config import ConfigError, tensor_specs

MODEL_FILE = "model.plan"

# trt.DataType member name -> KServe datatype (and the torch dtype of the same name, see _torch_dtype)
TRT_TYPES = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "UINT8": "UINT8",
}
TORCH_DTYPES = {
    "FP32": "float32",
    "FP16": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}

Shape = tuple[int, ...]


def profile_shapes(config: mc.ModelConfig) -> dict[str, tuple[Shape, Shape, Shape]]:
    """The optimization profile ``tailmark export`` builds for a config: batch 1..max_batch_size,
    opt at the largest preferred batch size (what the batcher aims for)."""
    from tailmark.models.export import profile_shapes as shapes_for

    batched = config.max_batch_size > 0
    inputs = {spec.name: spec.shape[1:] if batched else spec.shape for spec in tensor_specs(config, outputs=False)}
    try:
        return shapes_for(inputs, config.max_batch_size, tuple(config.dynamic_batching.preferred_batch_size))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class EngineTensor:
    """One I/O tensor of an engine, as TensorRT describes it (dtype: a trt.DataType member name)."""

    name: str
    is_input: bool
    dtype: str
    shape: Shape  # -1: dynamic


@dataclass(frozen=True, slots=True)
class Binding:
    name: str
    datatype: str  # KServe
    torch_dtype: str


@dataclass(frozen=True, slots=True)
class BindingPlan:
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]


def binding_plan(
    config: mc.ModelConfig, engine_tensors: list[EngineTensor], *, source: str = "model.plan"
) -> BindingPlan:
    """Match config.pbtxt's tensors to the engine's by name, kind, type and rank; refuse any mismatch."""
    by_name = {t.name: t for t in engine_tensors}
    plan: dict[bool, list[Binding]] = {True: [], False: []}
    for is_input in (True, False):
        kind = "input" if is_input else "output"
        for spec in tensor_specs(config, outputs=not is_input):
            tensor = by_name.get(spec.name)
            if tensor is None or tensor.is_input != is_input:
                raise ConfigError(f"{source}: the engine has no {kind} {spec.name!r} (it has {sorted(by_name)})")
            datatype = TRT_TYPES.get(tensor.dtype)
            if datatype != spec.datatype:
                raise ConfigError(
                    f"{source}: {kind} {spec.name!r} is {spec.datatype} in config.pbtxt, {tensor.dtype} in the engine"
                )
            if len(tensor.shape) != len(spec.shape) or any(
                e != -1 and c not in (-1, e) for c, e in zip(spec.shape, tensor.shape)
            ):
                raise ConfigError(
                    f"{source}: {kind} {spec.name!r} has shape {list(spec.shape)} in config.pbtxt, "
                    f"{list(tensor.shape)} in the engine"
                )
            plan[is_input].append(Binding(spec.name, datatype, TORCH_DTYPES[datatype]))
    extra = sorted(t.name for t in engine_tensors if t.is_input and t.name not in {b.name for b in plan[True]})
    if extra:
        raise ConfigError(f"{source}: engine inputs {extra} are not in config.pbtxt")
    return BindingPlan(tuple(plan[True]), tuple(plan[False]))


def import_tensorrt():
    """The tensorrt module, or a ConfigError saying why this machine cannot run TensorRT models."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ConfigError(
            f"TensorRT is not installed ({exc}); its libraries have no wheels on PyPI (install them from NVIDIA)"
        ) from None
    return trt


class TensorRTBackend:
    runs_inline = False

    def __init__(self, config: mc.ModelConfig, version_dir: Path) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():  # trt.Runtime without a driver raises an opaque TypeError
            raise ConfigError("TensorRT models need a CUDA device, and torch sees none")
        path = version_dir / (config.default_model_filename or MODEL_FILE)
        if not path.is_file():
            raise ConfigError(f"{version_dir}: no model file {path.name}")
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ConfigError(f"{path}: TensorRT could not deserialize it (built by another TensorRT version or GPU?)")
        tensors = []
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            tensors.append(
                EngineTensor(
                    name=name,
                    is_input=self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                    dtype=self._engine.get_tensor_dtype(name).name,
                    shape=tuple(self._engine.get_tensor_shape(name)),
                )
            )
        self.plan = binding_plan(config, tensors, source=str(path))
        self._local = threading.local()

    def _context(self):
        local = self._local
        if not hasattr(local, "context"):  # one context and stream per instance thread
            local.context = self._engine.create_execution_context()
            local.stream = self._torch.cuda.Stream()
        return local.context, local.stream

    def execute(self, inputs: Tensors) -> Tensors:
        torch = self._torch
        context, stream = self._context()
        keep = []
        with torch.cuda.stream(stream):
            for binding in self.plan.inputs:
                array = np.ascontiguousarray(inputs[binding.name])
                tensor = torch.from_numpy(array).to("cuda", non_blocking=True)
                keep.append(tensor)
                context.set_input_shape(binding.name, tuple(tensor.shape))
                context.set_tensor_address(binding.name, tensor.data_ptr())
            outputs = {}
            for binding in self.plan.outputs:
                shape = tuple(context.get_tensor_shape(binding.name))
                tensor = torch.empty(shape, dtype=getattr(torch, binding.torch_dtype), device="cuda")
                context.set_tensor_address(binding.name, tensor.data_ptr())
                outputs[binding.name] = tensor
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            host = {name: tensor.to("cpu", non_blocking=False) for name, tensor in outputs.items()}
        stream.synchronize()
        return {name: tensor.numpy() for name, tensor in host.items()}

    def close(self) -> None:
        self._engine = None
