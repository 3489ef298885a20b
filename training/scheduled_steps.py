"""The optimiser step the Transformer workloads share (lm, translation, translation-smoke).

A linear warm-up to the peak learning rate, cosine decay to zero at the end of the schedule (zero after it), and the
gradient norm clipped before every step. ``Seq2SeqSteps`` adds what the two sequence-to-sequence workloads also have
in common: Adam with betas (0.9, 0.98), cross-entropy that ignores padding, and teacher forcing (the decoder reads
BOS followed by the target shifted right).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tailmark.training.context import RunContext


def warmup_cosine(step: int, warmup_steps: int, schedule_steps: int) -> float:
    """The learning-rate factor after ``step`` optimiser steps: (step + 1) / warm-up during the warm-up, then a
    cosine from 1 down to 0 at ``schedule_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, schedule_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class ScheduledSteps:
    """An optimiser under the warm-up + cosine schedule; ``step(loss)`` is one clipped update."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_steps: int,
        schedule_steps: int,
        clip_norm: float,
    ) -> None:
        import torch

        self.torch, self.model, self.optimizer, self.clip_norm = torch, model, optimizer, clip_norm
        self.warmup_steps, self.schedule_steps = warmup_steps, schedule_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)

    def lr_factor(self, step: int) -> float:
        return warmup_cosine(step, self.warmup_steps, self.schedule_steps)

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` into freshly zeroed gradients, clip them, step the optimiser and the schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        self.scheduler.step()


class Seq2SeqSteps(ScheduledSteps):
    """The training step of an encoder-decoder ``SeqTransformer`` (models/seq_transformer.py)."""

    def __init__(
        self,
        ctx: RunContext,
        model: nn.Module,
        *,
        vocab_size: int,
        hparams,
    ) -> None:
        """``hparams``: the workload's, with learning_rate, warmup_steps, schedule_steps and clip_norm."""
        import torch

        from tailmark.models.seq_transformer import PAD

        optimizer = torch.optim.Adam(model.parameters(), lr=hparams.learning_rate, betas=(0.9, 0.98))
        super().__init__(
            model, optimizer, warmup_steps=hparams.warmup_steps, schedule_steps=hparams.schedule_steps,
            clip_norm=hparams.clip_norm,
        )  # fmt: skip
        self.ctx, self.vocab_size = ctx, vocab_size
        self.loss = torch.nn.CrossEntropyLoss(ignore_index=PAD)

    def train_on(self, src: torch.Tensor, tgt: torch.Tensor) -> None:
        """One step on a batch of (source, target + EOS) id rows, on the run's device."""
        from tailmark.models.seq_transformer import BOS

        torch, device = self.torch, self.ctx.device
        tgt_in = torch.cat([torch.full((len(tgt), 1), BOS), tgt[:, :-1]], dim=1)
        src, tgt, tgt_in = src.to(device), tgt.to(device), tgt_in.to(device)
        logits = self.model(src, tgt_in)
        self.step(self.loss(logits.reshape(-1, self.vocab_size), tgt.reshape(-1)))
