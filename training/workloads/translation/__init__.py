"""translation: a character-level Transformer translates German dictionary phrases to English, to a BLEU target.

The phrase pairs come from Debian's dict-de-en (training/workloads/translation/dictd.py); BLEU is sacrebleu's
corpus BLEU of the greedy decodes of a fixed held-out set of 1,000 German sources against their English. Training
draws batches from a permutation of the training pairs that continues across "epochs" of a fixed number of steps
(the evaluation cadence), reshuffled from the run's seed at the end of each pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tailmark.training.workload import DataMissing, DataSizes, Trainer, Workload, WorkloadSpec
from tailmark.training.workloads import standard_hparams
from tailmark.training.workloads.translation import dictd

if TYPE_CHECKING:
    import torch

    from tailmark.training.context import RunContext


@dataclass(frozen=True, slots=True)
class TranslationHparams:
    global_batch_size: int = 64  # tunable
    learning_rate: float = 2e-3  # tunable (peak, after warm-up)
    warmup_steps: int = 200  # tunable
    schedule_steps: int = 5000  # cosine decay to zero over this many steps
    steps_per_epoch: int = 250  # steps between evaluations
    d_model: int = 64
    layers: int = 2
    clip_norm: float = 1.0
    max_chars: int = 16  # the longest phrase kept, on either side
    max_words: int = 3  # the most English words kept
    held_out: int = 1000  # pairs in the held-out set


class TranslationTrainer(Trainer):
    def __init__(self, ctx: RunContext, hparams: TranslationHparams, path: Path) -> None:
        import torch

        from tailmark.models.seq_transformer import SeqTransformer
        from tailmark.training.scheduled_steps import Seq2SeqSteps
        from tailmark.training.workloads.translation.text import VOCAB_SIZE

        self.torch, self.ctx, self.hparams, self.path = torch, ctx, hparams, path
        torch.manual_seed(ctx.seed)
        width = hparams.d_model
        model = SeqTransformer(VOCAB_SIZE, width, layers=hparams.layers, ff=4 * width, max_len=hparams.max_chars + 1)
        self.model = ctx.wrap(model)
        self.steps = Seq2SeqSteps(ctx, self.model, vocab_size=VOCAB_SIZE, hparams=hparams)
        self.pairs: dictd.PhrasePairs | None = None
        self.order: torch.Tensor | None = None  # this pass's permutation of the training pairs
        self.cursor = 0
        self.passes = 0

    def load_data(self) -> DataSizes:
        from tailmark.training.workloads.translation.text import encode

        hp = self.hparams
        self.pairs = pairs = dictd.load_pairs(self.path, hp.max_chars, hp.max_words, hp.held_out)
        length = hp.max_chars + 1
        self.src = encode([s for s, _ in pairs.train], length, eos=False)
        self.tgt = encode([t for _, t in pairs.train], length, eos=True)
        self.eval_src = encode([s for s, _ in pairs.held_out], length, eos=False)
        return DataSizes(hp.steps_per_epoch * hp.global_batch_size, len(pairs.held_out))

    def _next_indices(self, count: int) -> torch.Tensor:
        """The next ``count`` training pairs of the global batch, reshuffling from the seed at each pass's end."""
        torch, taken = self.torch, []
        while count:
            if self.order is None or self.cursor == len(self.order):
                generator = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + self.passes)
                self.order, self.cursor = torch.randperm(len(self.src), generator=generator), 0
                self.passes += 1
            chunk = self.order[self.cursor : self.cursor + count]
            taken.append(chunk)
            self.cursor += len(chunk)
            count -= len(chunk)
        return torch.cat(taken)

    def train_epoch(self, epoch: int) -> None:
        ctx, hp = self.ctx, self.hparams
        local = ctx.local_batch_size(hp.global_batch_size)
        self.model.train()
        for _ in range(hp.steps_per_epoch):
            # every rank walks the same global permutation and takes its own slice of each global batch
            batch = self._next_indices(hp.global_batch_size)[ctx.rank * local : (ctx.rank + 1) * local]
            self.steps.train_on(self.src[batch], self.tgt[batch])

    def translate(self, src: torch.Tensor) -> list[str]:
        """Greedy decodes of ``src`` (character ids), as strings."""
        from tailmark.training.context import unwrap
        from tailmark.training.workloads.translation.text import decode

        model = unwrap(self.model).eval()
        return decode(model.greedy_decode(src.to(self.ctx.device), self.hparams.max_chars + 1).cpu())

    def evaluate(self) -> float:
        """sacrebleu's corpus BLEU (0-100) of the greedy translations of the whole held-out set, on rank 0's view.

        BLEU is a corpus statistic, not a sum of per-sentence scores, so every rank decodes the whole set: the
        set is small, and the score is then identical on every rank without gathering strings.
        """
        from tailmark.training.workloads.translation.text import corpus_bleu

        assert self.pairs is not None
        hypotheses = self.translate(self.eval_src)
        return corpus_bleu(hypotheses, [t for _, t in self.pairs.held_out])


class TranslationWorkload(Workload):
    spec: ClassVar[WorkloadSpec] = WorkloadSpec(
        name="translation",
        benchmark="transformer_de_en",
        metric="bleu",
        target=0.6,
        eval_every_epochs=1,
        max_epochs=20,
    )
    tunable: ClassVar[frozenset[str]] = frozenset({"global_batch_size", "learning_rate", "warmup_steps"})

    @classmethod
    def default_hparams(cls) -> TranslationHparams:
        return TranslationHparams()

    def data_files(self) -> dict[Path, str]:
        path = dictd.dict_path()
        if not path.is_file():
            raise DataMissing(f"German-English dictionary not found at {path}: install it with `{dictd.INSTALL}`")
        return {path: dictd.DICT_SHA256}

    def logged_hparams(self) -> dict[str, Any]:
        h = self.hparams
        return standard_hparams(h.global_batch_size, "adam", h.learning_rate, warmup_steps=h.warmup_steps)

    def build(self, ctx: RunContext) -> Trainer:
        return TranslationTrainer(ctx, self.hparams, dictd.dict_path())


WORKLOAD = TranslationWorkload
