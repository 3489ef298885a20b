"""recommendation: NeuMF on MovieLens-100K, to HR@10 >= 0.65 against 99 sampled negatives (leave-one-out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tailmark.training.workload import DataSizes, Trainer, Workload, WorkloadSpec
from tailmark.training.workloads import standard_hparams
from tailmark.training.workloads.recommendation.data import (
    INTER_SHA256,
    NUM_ITEMS,
    NUM_USERS,
    Interactions,
    inter_file,
    load,
)

if TYPE_CHECKING:
    import torch

    from tailmark.training.context import RunContext

TOP_K = 10


@dataclass(frozen=True, slots=True)
class NcfHparams:
    global_batch_size: int = 1024  # tunable
    learning_rate: float = 2e-3  # tunable
    negatives_per_positive: int = 4  # training negatives sampled per positive, fresh every epoch
    factors: int = 32  # GMF embedding width
    mlp_width: int = 64  # first MLP layer (then /2, /4)


class NcfTrainer(Trainer):
    def __init__(self, ctx: RunContext, hparams: NcfHparams, path: Path) -> None:
        import torch

        from tailmark.models.ncf import NeuMF

        self.ctx, self.hparams, self.path = ctx, hparams, path
        self.torch = torch
        torch.manual_seed(ctx.seed)
        width = hparams.mlp_width
        self.model = ctx.wrap(NeuMF(NUM_USERS, NUM_ITEMS, hparams.factors, (width, width // 2, width // 4)))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hparams.learning_rate)
        self.data: Interactions | None = None

    def load_data(self) -> DataSizes:
        torch = self.torch
        self.data = data = load(self.path)
        if (data.num_users, data.num_items) != (NUM_USERS, NUM_ITEMS):
            raise ValueError(f"{self.path}: {data.num_users} users, {data.num_items} items; expected ML-100K's")
        self.rated = torch.from_numpy(data.rated)
        self.pos_users = torch.from_numpy(data.train_users)
        self.pos_items = torch.from_numpy(data.train_items)
        self.candidates = torch.from_numpy(data.candidates)
        train = len(data.train_users) * (1 + self.hparams.negatives_per_positive)
        return DataSizes(train_samples=train, eval_samples=data.num_users)

    def _epoch_samples(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Positives plus fresh negatives (items the user never rated), identical on every rank."""
        torch = self.torch
        generator = torch.Generator().manual_seed(self.ctx.seed * 1000 + epoch)
        users = self.pos_users.repeat(self.hparams.negatives_per_positive)
        items = torch.randint(0, self.rated.shape[1], users.shape, generator=generator)
        clash = self.rated[users, items]
        while clash.any():
            items[clash] = torch.randint(0, self.rated.shape[1], (int(clash.sum()),), generator=generator)
            clash = self.rated[users, items]
        labels = torch.cat([torch.ones(len(self.pos_users)), torch.zeros(len(users))])
        return torch.cat([self.pos_users, users]), torch.cat([self.pos_items, items]), labels

    def train_epoch(self, epoch: int) -> None:
        users, items, labels = self._epoch_samples(epoch)
        loss_fn = self.torch.nn.BCEWithLogitsLoss()
        self.model.train()
        for batch in self.ctx.train_batches(len(labels), self.hparams.global_batch_size, epoch):
            self.optimizer.zero_grad(set_to_none=True)
            loss_fn(self.model(users[batch], items[batch]), labels[batch]).backward()
            self.optimizer.step()

    def evaluate(self) -> float:
        """HR@10: the share of users whose held-out item ranks in the top 10 of its 100 candidates."""
        from tailmark.training.context import unwrap

        torch = self.torch
        model = unwrap(self.model).eval()
        shard = self.ctx.eval_shard(len(self.candidates))
        candidates = self.candidates[shard]
        users = shard.unsqueeze(1).expand_as(candidates)
        with torch.no_grad():
            scores = model(users.reshape(-1), candidates.reshape(-1)).view_as(candidates)
        # rank = how many negatives score strictly higher than the held-out item
        rank = (scores[:, 1:] > scores[:, :1]).sum(dim=1)
        hits, total = self.ctx.sum_over_ranks(float((rank < TOP_K).sum()), float(len(shard)))
        return hits / total


class NcfWorkload(Workload):
    spec: ClassVar[WorkloadSpec] = WorkloadSpec(
        name="recommendation", benchmark="ncf_ml100k", metric="hr@10", target=0.65, eval_every_epochs=1, max_epochs=20
    )
    tunable: ClassVar[frozenset[str]] = frozenset({"global_batch_size", "learning_rate"})

    @classmethod
    def default_hparams(cls) -> NcfHparams:
        return NcfHparams()

    def data_files(self) -> dict[Path, str]:
        return {inter_file(): INTER_SHA256}

    def logged_hparams(self) -> dict[str, Any]:
        return standard_hparams(self.hparams.global_batch_size, "adam", self.hparams.learning_rate)

    def build(self, ctx: RunContext) -> Trainer:
        return NcfTrainer(ctx, self.hparams, inter_file())


WORKLOAD = NcfWorkload
