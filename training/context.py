"""One process's place in a run: seed, rank, world size, device, and the data-parallel helpers.

The same code serves one process and ``torchrun --nproc_per_node N``: batches come from torch's
``DistributedSampler`` (a single process is replica 0 of 1), the global batch is split evenly across ranks so the
hyperparameters (and the reference convergence points) do not depend on N, and evaluation counts are summed with
``all_reduce`` so every rank sees the same accuracy and stops at the same epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True, slots=True)
class RunContext:
    seed: int
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (immutable)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def local_batch_size(self, global_batch_size: int) -> int:
        if global_batch_size % self.world_size:
            raise ValueError(f"global batch {global_batch_size} does not divide over {self.world_size} processes")
        return global_batch_size // self.world_size

    def train_batches(self, num_samples: int, global_batch_size: int, epoch: int) -> Iterator[torch.Tensor]:
        """This rank's index batches for one epoch: a fresh shuffle per epoch, every sample once per epoch."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(
            range(num_samples), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=self.seed
        )
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(iter(sampler)), dtype=torch.long)
        yield from indices.split(self.local_batch_size(global_batch_size))

    def eval_shard(self, num_samples: int) -> torch.Tensor:
        """The evaluation indices this rank scores (strided, no padding, so nothing is counted twice)."""
        return torch.arange(self.rank, num_samples, self.world_size)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def sum_over_ranks(self, *values: float) -> list[float]:
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def draw_seed() -> int:
    """A fresh seed from the OS, as MLPerf's closed division requires."""
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def init_process_group(*, cuda: bool | None = None) -> tuple[int, int, torch.device]:
    """Join the torchrun group (env://): gloo on CPU, NCCL on GPU (``cuda`` None: whenever CUDA is available).
    Returns (rank, world size, device)."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return rank, world_size, torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return rank, world_size, torch.device("cpu")


def shared_seed(seed: int, ctx_rank: int, world_size: int, device: torch.device) -> int:
    """Rank 0's seed, broadcast so every rank initialises the same model and shuffles the same way."""
    if world_size == 1:
        return seed
    tensor = torch.tensor([seed if ctx_rank == 0 else 0], dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())
