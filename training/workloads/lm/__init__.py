"""lm: a byte-level decoder-only Transformer on CPython 3.11's standard library, to a held-out next-byte accuracy.

A code-completion language model: given up to ``context`` bytes of Python source, predict the next byte. Training
batches are windows at random offsets of the training modules, drawn afresh from the run's seed (and the rank,
under DDP); an "epoch" is a fixed number of steps. The held-out score is next-token (byte) accuracy over a fixed set
of windows of the held-out modules, every position of each window predicted, the same for every run.

Two sizes (``--set size=...``): ``full`` is the benchmark (minutes on a CPU); ``test`` is a smaller model with a
looser target that converges in seconds, for the test suite. Each size is its own benchmark name, with its own
target in the logs and its own compliance configuration; changing ``size`` moves a run to the open division.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tailmark.training.scheduled_steps import ScheduledSteps
from tailmark.training.workload import DataSizes, Trainer, Workload, WorkloadSpec
from tailmark.training.workloads import standard_hparams
from tailmark.training.workloads.lm.corpus import Corpus, corpus_dir, manifest, read_corpus

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tailmark.training.context import RunContext


@dataclass(frozen=True, slots=True)
class Size:
    """What a size fixes: the benchmark it is, its target, the model, the epoch and the held-out windows."""

    spec: WorkloadSpec
    d_model: int
    layers: int
    nhead: int
    context: int
    steps_per_epoch: int
    schedule_steps: int  # cosine decay to zero over this many steps
    eval_windows: int  # held-out windows of context + 1 bytes, spread evenly over the held-out stream


SIZES: dict[str, Size] = {
    "full": Size(
        WorkloadSpec("lm", "tiny_lm_pystdlib", "next_byte_acc", 0.50, eval_every_epochs=1, max_epochs=40),
        d_model=96,
        layers=3,
        nhead=4,
        context=64,
        steps_per_epoch=50,
        schedule_steps=1500,
        eval_windows=256,
    ),
    "test": Size(
        WorkloadSpec("lm", "tiny_lm_pystdlib_test", "next_byte_acc", 0.35, eval_every_epochs=1, max_epochs=20),
        d_model=64,
        layers=2,
        nhead=4,
        context=32,
        steps_per_epoch=25,
        schedule_steps=1000,
        eval_windows=128,
    ),
}


@dataclass(frozen=True, slots=True)
class LmHparams:
    global_batch_size: int = 32  # tunable
    learning_rate: float = 3e-3  # tunable (peak, after warm-up)
    warmup_steps: int = 100  # tunable
    size: str = "full"  # full (the benchmark) or test (seconds, looser target)
    clip_norm: float = 1.0


def windows_at(stream: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """(len(starts), length) slices of ``stream`` beginning at ``starts``."""
    import torch

    return stream[starts[:, None] + torch.arange(length)]


def eval_starts(stream_length: int, context: int, count: int) -> torch.Tensor:
    """``count`` non-overlapping window starts spread evenly over a stream: the same for every run."""
    import torch

    slots = stream_length // (context + 1)
    if slots < count:
        raise ValueError(f"the held-out stream has room for {slots} windows of {context + 1} bytes, not {count}")
    return torch.linspace(0, slots - 1, count).round().long() * (context + 1)


class LmTrainer(Trainer):
    def __init__(self, ctx: RunContext, hparams: LmHparams, size: Size, folder: Path, model: nn.Module) -> None:
        import torch

        self.torch, self.ctx, self.hparams, self.size, self.folder = torch, ctx, hparams, size, folder
        self.model = ctx.wrap(model)
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=hparams.learning_rate, betas=(0.9, 0.95), weight_decay=0.01
        )
        self.steps = ScheduledSteps(
            self.model,
            optimizer,
            warmup_steps=hparams.warmup_steps,
            schedule_steps=size.schedule_steps,
            clip_norm=hparams.clip_norm,
        )
        self.loss = torch.nn.CrossEntropyLoss()
        self.corpus: Corpus | None = None

    def load_data(self) -> DataSizes:
        torch = self.torch
        self.corpus = read_corpus(self.folder)
        self.train_stream = torch.frombuffer(bytearray(self.corpus.train), dtype=torch.uint8).long()
        held = torch.frombuffer(bytearray(self.corpus.held_out), dtype=torch.uint8).long()
        context = self.size.context
        self.eval_windows = windows_at(held, eval_starts(len(held), context, self.size.eval_windows), context + 1)
        steps, gbs = self.size.steps_per_epoch, self.hparams.global_batch_size
        return DataSizes(train_samples=steps * gbs, eval_samples=self.size.eval_windows)

    def train_epoch(self, epoch: int) -> None:
        torch, ctx, context = self.torch, self.ctx, self.size.context
        local = ctx.local_batch_size(self.hparams.global_batch_size)
        generator = torch.Generator().manual_seed((ctx.seed * 100_003 + epoch) * 64 + ctx.rank)
        last_start = len(self.train_stream) - (context + 1)
        self.model.train()
        for _ in range(self.size.steps_per_epoch):
            starts = torch.randint(0, last_start + 1, (local,), generator=generator)
            batch = windows_at(self.train_stream, starts, context + 1).to(ctx.device)
            logits = self.model(batch[:, :-1])
            self.steps.step(self.loss(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)))

    def evaluate(self) -> float:
        """Next-byte accuracy: the share of held-out positions whose argmax is the byte that follows."""
        from tailmark.training.context import unwrap

        torch = self.torch
        model = unwrap(self.model).eval()
        windows = self.eval_windows[self.ctx.eval_shard(len(self.eval_windows))].to(self.ctx.device)
        hits = 0.0
        with torch.no_grad():
            for chunk in windows.split(64):
                hits += float((model(chunk[:, :-1]).argmax(dim=-1) == chunk[:, 1:]).sum())
        total = float(windows.shape[0] * self.size.context)
        hits, total = self.ctx.sum_over_ranks(hits, total)
        return hits / total


class LmWorkload(Workload):
    spec: ClassVar[WorkloadSpec] = SIZES["full"].spec  # an instance carries its size's spec
    tunable: ClassVar[frozenset[str]] = frozenset({"global_batch_size", "learning_rate", "warmup_steps"})

    def __init__(self, hparams: LmHparams) -> None:
        if hparams.size not in SIZES:
            raise ValueError(f"size={hparams.size!r}; known sizes: {', '.join(SIZES)}")
        super().__init__(hparams)
        self.size = SIZES[hparams.size]
        self.spec = self.size.spec  # type: ignore[misc]  (the size decides benchmark and target)

    @classmethod
    def default_hparams(cls) -> LmHparams:
        return LmHparams()

    def data_files(self) -> dict[Path, str]:
        folder = corpus_dir()
        return {folder / name: digest for name, digest in manifest().items()}

    def logged_hparams(self) -> dict[str, Any]:
        h = self.hparams
        return standard_hparams(h.global_batch_size, "adamw", h.learning_rate, warmup_steps=h.warmup_steps)

    def model(self) -> nn.Module:
        """The untrained model of this size (to load a run's state_dict into)."""
        from tailmark.models.tiny_lm import TinyLM

        size = self.size
        return TinyLM(size.d_model, size.nhead, size.layers, 4 * size.d_model, size.context)

    def exportable(self) -> bool:
        return True

    def export_model(self, weights: Path, repository: Path, name: str | None = None) -> Path:
        """A decoupled ``tiny_lm`` model folder (config.pbtxt + state_dict); see export.py."""
        from tailmark.training.workloads.lm.export import export_lm

        return export_lm(self, weights, repository, name=name)

    def build(self, ctx: RunContext) -> Trainer:
        import torch

        torch.manual_seed(ctx.seed)
        return LmTrainer(ctx, self.hparams, self.size, corpus_dir(), self.model())


WORKLOAD = LmWorkload
