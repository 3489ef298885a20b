"""translation-smoke: a small Transformer learns to reverse token sequences, to 95 % exact match on held-out ones.

The generated stand-in that was the translation workload before ``translation`` trained on real phrase pairs
(dict-de-en); it needs no data package, so it stays as the quick check of the sequence-to-sequence path. The task: a
source of 6-12 symbols from a fixed vocabulary, and its reversal as the target. Training batches are drawn afresh
from the run's seed (an "epoch" is a fixed number of steps); the 512 held-out sequences come from a fixed generator
and are the same for every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tailmark.training.workload import DataSizes, Trainer, Workload, WorkloadSpec
from tailmark.training.workloads import standard_hparams

if TYPE_CHECKING:
    import torch

    from tailmark.training.context import RunContext

VOCAB_SIZE = 20  # PAD, BOS, EOS and 17 symbols
FIRST_SYMBOL = 3
MIN_LEN, MAX_LEN = 6, 12
EVAL_SEQUENCES = 512
EVAL_SEED = 1234  # the held-out set is part of the task, fixed across runs


@dataclass(frozen=True, slots=True)
class ReverseHparams:
    global_batch_size: int = 64  # tunable
    learning_rate: float = 2e-3  # tunable (peak, after warm-up)
    warmup_steps: int = 200  # tunable
    schedule_steps: int = 2500  # cosine decay to zero over this many steps
    steps_per_epoch: int = 100
    d_model: int = 64
    layers: int = 2
    clip_norm: float = 1.0


def make_pairs(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (source, target) pairs: sources padded to MAX_LEN, targets reversed + EOS, padded to MAX_LEN + 1."""
    import torch

    from tailmark.models.seq_transformer import EOS, PAD

    lengths = torch.randint(MIN_LEN, MAX_LEN + 1, (count,), generator=generator)
    symbols = torch.randint(FIRST_SYMBOL, VOCAB_SIZE, (count, MAX_LEN), generator=generator)
    column = torch.arange(MAX_LEN)
    src = torch.where(column < lengths[:, None], symbols, PAD)
    # reversed: position j of the target is source position length - 1 - j
    index = (lengths[:, None] - 1 - column).clamp(min=0)
    reversed_ = torch.where(column < lengths[:, None], src.gather(1, index), PAD)
    tgt = torch.cat([reversed_, torch.full((count, 1), PAD)], dim=1)
    tgt[torch.arange(count), lengths] = EOS
    return src, tgt


class ReverseTrainer(Trainer):
    def __init__(self, ctx: RunContext, hparams: ReverseHparams) -> None:
        import torch

        from tailmark.models.seq_transformer import SeqTransformer
        from tailmark.training.scheduled_steps import Seq2SeqSteps

        self.torch, self.ctx, self.hparams = torch, ctx, hparams
        torch.manual_seed(ctx.seed)
        model = SeqTransformer(VOCAB_SIZE, hparams.d_model, layers=hparams.layers, ff=4 * hparams.d_model)
        self.model = ctx.wrap(model)
        self.steps = Seq2SeqSteps(ctx, self.model, vocab_size=VOCAB_SIZE, hparams=hparams)
        self.eval_set: tuple[torch.Tensor, torch.Tensor] | None = None

    def load_data(self) -> DataSizes:
        generator = self.torch.Generator().manual_seed(EVAL_SEED)
        self.eval_set = make_pairs(EVAL_SEQUENCES, generator)
        return DataSizes(self.hparams.steps_per_epoch * self.hparams.global_batch_size, EVAL_SEQUENCES)

    def train_epoch(self, epoch: int) -> None:
        torch, ctx = self.torch, self.ctx
        local = ctx.local_batch_size(self.hparams.global_batch_size)
        generator = torch.Generator().manual_seed((ctx.seed * 100_003 + epoch) * 64 + ctx.rank)
        self.model.train()
        for _ in range(self.hparams.steps_per_epoch):
            self.steps.train_on(*make_pairs(local, generator))

    def evaluate(self) -> float:
        """Exact match: every target token through EOS decoded correctly, greedily."""
        from tailmark.models.seq_transformer import PAD
        from tailmark.training.context import unwrap

        assert self.eval_set is not None
        model = unwrap(self.model).eval()
        shard = self.ctx.eval_shard(EVAL_SEQUENCES)
        src, tgt = (t[shard].to(self.ctx.device) for t in self.eval_set)
        decoded = model.greedy_decode(src, tgt.shape[1])
        exact = ((decoded == tgt) | (tgt == PAD)).all(dim=1)
        hits, total = self.ctx.sum_over_ranks(float(exact.sum()), float(len(shard)))
        return hits / total


class ReverseWorkload(Workload):
    spec: ClassVar[WorkloadSpec] = WorkloadSpec(
        name="translation-smoke",
        benchmark="transformer_reverse",
        metric="exact_match",
        target=0.95,
        eval_every_epochs=1,
        max_epochs=30,
    )
    tunable: ClassVar[frozenset[str]] = frozenset({"global_batch_size", "learning_rate", "warmup_steps"})

    @classmethod
    def default_hparams(cls) -> ReverseHparams:
        return ReverseHparams()

    def data_files(self) -> dict[Path, str]:
        return {}  # generated: nothing on disk to verify or to drop from the page cache

    def logged_hparams(self) -> dict[str, Any]:
        h = self.hparams
        return standard_hparams(h.global_batch_size, "adam", h.learning_rate, warmup_steps=h.warmup_steps)

    def build(self, ctx: RunContext) -> Trainer:
        return ReverseTrainer(ctx, self.hparams)


WORKLOAD = ReverseWorkload
