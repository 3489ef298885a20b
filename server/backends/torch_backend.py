"""PyTorch backend: TorchScript (``model.pt``) or torch.export programs (``model.pt2``).

Inputs are passed positionally in config order; a single tensor, a tuple/list (config output order)
or a dict keyed by output name comes back. Neither format unpickles arbitrary Python objects:
TorchScript archives hold code and tensors, and exported programs load with torch.export.load.
Parameters: ``intra_op_threads`` (default 1), ``warmup_runs`` (default 2), ``cuda_graph_batch_sizes``
(e.g. "1,2,4,8": CUDA graphs captured at those batch sizes, see cuda_graphs.py; ignored on the CPU). Runs
on CUDA when the instance group asks for GPU (or AUTO) and CUDA is available.

Warm-up: when every input's shape is fixed, the model runs on zeros at load (TorchScript's profiling
executor makes the first calls slow: without it the first requests of a run queue behind them), and a
model whose outputs disagree with its config, or that cannot take the declared inputs, is UNAVAILABLE
from the start instead of failing its first request.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tailmark.protos import model_config_pb2 as mc
from tailmark.protos.codec import numpy_dtype
from tailmark.server.backends import cuda_graphs
from tailmark.server.backends.base import Tensors
from tailmark.server.config import ConfigError, config_type_to_kserve, parameter

log = logging.getLogger(__name__)

MODEL_FILES = ("model.pt", "model.pt2")


class TorchBackend:
    runs_inline = False

    def __init__(self, config: mc.ModelConfig, version_dir: Path) -> None:
        try:
            import torch
        except ImportError as exc:  # the client-only install (no extras): the model is UNAVAILABLE, saying why
            raise ConfigError(f"the PyTorch backend needs torch ({exc}): pip install 'tailmark[torch]'") from None

        self._torch = torch
        # one intra-op thread per instance by default: on a few shared cores, OpenMP teams of
        # several threads spin against each other (measured here: 0.8 ms per image vs 62 ms)
        torch.set_num_threads(int(parameter(config, "intra_op_threads", "1")))
        path = self._model_path(config, version_dir)
        self.device = torch.device("cuda" if self._wants_cuda(config) and torch.cuda.is_available() else "cpu")
        try:
            if path.suffix == ".pt2":
                self._module = torch.export.load(str(path)).module().to(self.device)
            else:
                self._module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as exc:  # a corrupt or foreign file: report it as a config problem
            raise ConfigError(f"{path}: cannot load: {exc}") from None
        self._input_names = [i.name for i in config.input]
        self._outputs = [(o.name, numpy_dtype(config_type_to_kserve(o.data_type))) for o in config.output]
        self._graphs = None
        self._warm_up(config, int(parameter(config, "warmup_runs", "2")))
        sizes = cuda_graphs.parse_sizes(parameter(config, "cuda_graph_batch_sizes", ""), config.max_batch_size)
        if sizes and self.device.type == "cuda":
            self._graphs = cuda_graphs.CudaGraphs(torch, self._module, self._graph_inputs(config), sizes, self.device)
        elif sizes:
            log.info("model %r: cuda_graph_batch_sizes ignored (the model runs on the CPU)", config.name)

    def _graph_inputs(self, config: mc.ModelConfig) -> list[tuple[tuple[int, ...], object]]:
        specs = []
        for entry in config.input:
            if any(d < 0 for d in entry.dims):
                raise ConfigError(
                    f"model {config.name!r}: CUDA graphs need fixed dims; {entry.name!r} has {entry.dims}"
                )
            example = np.zeros((1, *entry.dims), dtype=numpy_dtype(config_type_to_kserve(entry.data_type)))
            specs.append((tuple(entry.dims), _as_torch(self._torch, example).dtype))
        return specs

    def _warm_up(self, config: mc.ModelConfig, runs: int) -> None:
        batch = [1] if config.max_batch_size > 0 else []
        inputs = {}
        for entry in config.input:
            datatype = config_type_to_kserve(entry.data_type)
            if datatype == "BYTES" or any(d < 0 for d in entry.dims):
                return  # shape known only per request: the first request pays
            inputs[entry.name] = np.zeros(batch + list(entry.dims), dtype=numpy_dtype(datatype))
        for _ in range(runs):
            try:
                outputs = self.execute(inputs)
            except Exception as exc:
                raise ConfigError(
                    f"model {config.name!r}: warm-up on zeros of the declared shapes failed: {exc}"
                ) from None
        for entry in config.output if runs else ():
            expected = batch + list(entry.dims)
            got = list(outputs[entry.name].shape)
            if len(got) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, got)):
                raise ConfigError(
                    f"model {config.name!r}: output {entry.name!r} has shape {got}, config declares {expected}"
                )

    @staticmethod
    def _model_path(config: mc.ModelConfig, version_dir: Path) -> Path:
        names = (config.default_model_filename,) if config.default_model_filename else MODEL_FILES
        for name in names:
            if (version_dir / name).is_file():
                return version_dir / name
        raise ConfigError(f"{version_dir}: no model file (looked for {', '.join(names)})")

    @staticmethod
    def _wants_cuda(config: mc.ModelConfig) -> bool:
        kinds = {group.kind for group in config.instance_group}
        return bool(kinds & {mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO})

    def execute(self, inputs: Tensors) -> Tensors:
        torch = self._torch
        args = [_as_torch(torch, inputs[name]) for name in self._input_names]
        result = self._graphs.run(args, len(args[0])) if self._graphs is not None and args else None
        if result is None:
            args = [arg.to(self.device, non_blocking=True) for arg in args]
            with torch.inference_mode():
                result = self._module(*args)
        if isinstance(result, dict):
            values = [result[name] for name, _ in self._outputs]
        elif isinstance(result, list | tuple):
            values = list(result)
        else:
            values = [result]
        if len(values) != len(self._outputs):
            raise RuntimeError(f"model returned {len(values)} outputs, config declares {len(self._outputs)}")
        return {name: _to_numpy(torch, value, dtype) for (name, dtype), value in zip(self._outputs, values)}

    def close(self) -> None:
        self._module = None


def _as_torch(torch, array: np.ndarray):
    """A CPU tensor over ``array`` (copied when the array is a read-only request buffer)."""
    if array.dtype.kind == "V" or array.dtype.name == "bfloat16":  # ml_dtypes.bfloat16: reinterpret the bits
        tensor = torch.from_numpy(np.array(array).view(np.int16)).view(torch.bfloat16)
    elif array.flags.writeable and array.flags.c_contiguous:
        tensor = torch.from_numpy(array)  # a batch the batcher concatenated: already our own copy
    else:
        tensor = torch.from_numpy(np.array(array))  # copy: request buffers are read-only views
    return tensor


def _to_numpy(torch, tensor, dtype: np.dtype) -> np.ndarray:
    tensor = tensor.detach().to("cpu")
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(dtype)
    return tensor.numpy().astype(dtype, copy=False)
