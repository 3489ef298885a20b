"""The training loop shared by the image-classification workloads (smoke, vision): Adam, cross-entropy, top-1."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tailmark.training.context import RunContext, unwrap
from tailmark.training.workload import DataSizes, Trainer

# (train images, train labels, eval images, eval labels): float32 (N, C, H, W) and int64 (N,)
Split = tuple[Tensor, Tensor, Tensor, Tensor]


class ClassifierTrainer(Trainer):
    def __init__(
        self,
        ctx: RunContext,
        model: nn.Module,
        *,
        load: Callable[[], Split],
        global_batch_size: int,
        learning_rate: float,
        eval_batch_size: int = 1024,
    ) -> None:
        self.ctx = ctx
        self.model = ctx.wrap(model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.loss = nn.CrossEntropyLoss()
        self._load = load
        self.global_batch_size = global_batch_size
        self.eval_batch_size = eval_batch_size
        self.split: Split | None = None

    def load_data(self) -> DataSizes:
        self.split = tuple(t.to(self.ctx.device) for t in self._load())  # type: ignore[assignment]
        return DataSizes(train_samples=len(self.split[1]), eval_samples=len(self.split[3]))

    def train_epoch(self, epoch: int) -> None:
        x, y, _, _ = self._data()
        self.model.train()
        for batch in self.ctx.train_batches(len(y), self.global_batch_size, epoch):
            batch = batch.to(self.ctx.device)
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(self.model(x[batch]), y[batch]).backward()
            self.optimizer.step()

    @torch.no_grad()
    def evaluate(self) -> float:
        _, _, x, y = self._data()
        self.model.eval()
        # score this rank's shard with the bare module: DDP's forward would try to sync buffers
        model = unwrap(self.model)
        correct = 0
        shard = self.ctx.eval_shard(len(y)).to(self.ctx.device)
        for batch in shard.split(self.eval_batch_size):
            correct += int((model(x[batch]).argmax(dim=1) == y[batch]).sum())
        correct_all, total = self.ctx.sum_over_ranks(float(correct), float(len(shard)))
        return correct_all / total

    def _data(self) -> Split:
        if self.split is None:
            raise RuntimeError("load_data() must run before training or evaluation")
        return self.split
