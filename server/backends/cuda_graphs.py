"""CUDA graphs for a PyTorch model at fixed batch sizes (model parameter ``cuda_graph_batch_sizes``).

A graph replays a whole forward pass with one launch, which removes the per-kernel launch cost that
dominates small batches on a GPU. Graphs need static shapes and buffers, so one is captured per listed
batch size at load; a batch is padded with zeros up to the smallest captured size that holds it (its rows
are sliced back out), and a batch larger than every captured size runs eagerly. The static buffers are
shared, so replays take turns (a lock): list sizes up to the batcher's ``max_batch_size``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from tailmark.server.config import ConfigError

WARMUP_ITERATIONS = 3  # torch asks for a few eager runs on a side stream before capture


def parse_sizes(text: str, max_batch_size: int) -> tuple[int, ...]:
    """ "1,4,8" → (1, 4, 8); a ConfigError for anything that is not a list of sizes within 1..max_batch_size."""
    if not text.strip():
        return ()
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"cuda_graph_batch_sizes {text!r}: expected comma-separated integers") from None
    if max_batch_size <= 0:
        raise ConfigError("cuda_graph_batch_sizes needs a batching model (max_batch_size > 0)")
    if not sizes or sizes[0] < 1 or sizes[-1] > max_batch_size:
        raise ConfigError(f"cuda_graph_batch_sizes {text!r}: sizes must be within 1..{max_batch_size}")
    return tuple(sizes)


def padded_size(batch: int, sizes: Sequence[int]) -> int | None:
    """The smallest captured size that holds ``batch`` rows, or None (run eagerly)."""
    index = bisect.bisect_left(sizes, batch)
    return sizes[index] if index < len(sizes) else None


class CudaGraphs:
    """One captured graph per batch size, with its static input and output tensors on the device."""

    def __init__(self, torch, module, input_specs: Sequence[tuple[tuple[int, ...], object]], sizes, device) -> None:
        """``input_specs``: per input (in call order) the per-sample dims and the torch dtype."""
        self._torch = torch
        self.sizes = tuple(sizes)
        self._lock = threading.Lock()
        self._graphs = {}
        for size in self.sizes:
            static = [torch.zeros((size, *dims), dtype=dtype, device=device) for dims, dtype in input_specs]
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(WARMUP_ITERATIONS):
                    module(*static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                outputs = module(*static)
            self._graphs[size] = (graph, static, outputs)

    def run(self, args: Sequence, batch: int):
        """The model's raw outputs (on the CPU) for ``args`` (CPU tensors, ``batch`` rows), or None when no
        captured graph fits (too large a batch, or other per-sample shapes): the caller runs eagerly."""
        size = padded_size(batch, self.sizes)
        if size is None:
            return None
        graph, static, outputs = self._graphs[size]
        if any(arg.shape[1:] != buffer.shape[1:] for arg, buffer in zip(args, static, strict=True)):
            return None
        with self._lock:
            for arg, buffer in zip(args, static, strict=True):
                buffer[:batch].copy_(arg, non_blocking=True)
                if size > batch:
                    buffer[batch:].zero_()
            graph.replay()
            # copied out under the lock: the next replay overwrites the static outputs
            return _map(outputs, lambda tensor: tensor[:batch].to("cpu"))


def _map(outputs, fn):
    if isinstance(outputs, dict):
        return {key: fn(value) for key, value in outputs.items()}
    if isinstance(outputs, list | tuple):
        return [fn(value) for value in outputs]
    return fn(outputs)
