"""The translation workload's generated task, schedule and metric (converging takes minutes: timed by hand)."""

from __future__ import annotations

import pytest
import torch

from tailmark.models.seq_transformer import EOS, PAD
from tailmark.training.context import RunContext
from tailmark.training.workload import with_overrides
from tailmark.training.workloads import workload_class
from tailmark.training.workloads.translation_smoke import EVAL_SEQUENCES, MAX_LEN, MIN_LEN, make_pairs


def test_targets_are_reversed_sources_ending_in_eos():
    src, tgt = make_pairs(200, torch.Generator().manual_seed(0))
    assert src.shape == (200, MAX_LEN) and tgt.shape == (200, MAX_LEN + 1)
    for s, t in zip(src.tolist(), tgt.tolist(), strict=True):
        symbols = [x for x in s if x != PAD]
        assert MIN_LEN <= len(symbols) <= MAX_LEN and min(symbols) >= 3
        assert t[: len(symbols)] == symbols[::-1] and t[len(symbols)] == EOS
        assert all(x == PAD for x in t[len(symbols) + 1 :])


def test_held_out_set_is_fixed_and_training_batches_follow_the_seed():
    cls = workload_class("translation-smoke")
    first, second = (cls(cls.default_hparams()).build(RunContext(seed=s)) for s in (1, 2))
    first.load_data()
    second.load_data()
    assert all(torch.equal(a, b) for a, b in zip(first.eval_set, second.eval_set, strict=True))


def test_warmup_then_cosine_to_zero():
    cls = workload_class("translation-smoke")
    trainer = cls(cls.default_hparams()).build(RunContext(seed=0))
    factors = [trainer.steps.lr_factor(step) for step in (0, 99, 199, 200, 1350, 2500, 4000)]
    assert factors[0] == pytest.approx(1 / 200) and factors[1] == pytest.approx(0.5)
    assert factors[2] == factors[3] == pytest.approx(1.0)
    assert factors[4] == pytest.approx(0.5, abs=0.01) and factors[5] == factors[6] == pytest.approx(0.0)
    # the optimiser runs at that factor of the peak rate: step 0 before any update, then after each one
    lr = cls.default_hparams().learning_rate
    optimizer = trainer.steps.optimizer
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * factors[0])
    for _ in range(99):
        trainer.steps.scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * factors[1])


def test_a_short_epoch_trains_and_scores_exact_match():
    workload, closed = with_overrides(workload_class("translation-smoke"), {"steps_per_epoch": "3"})
    assert not closed  # steps_per_epoch is not tunable
    trainer = workload.build(RunContext(seed=0))
    sizes = trainer.load_data()
    assert sizes.eval_samples == EVAL_SEQUENCES and sizes.train_samples == 3 * 64
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_epoch(1)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    score = trainer.evaluate()
    assert 0.0 <= score < 0.5 and (score * EVAL_SEQUENCES) == pytest.approx(round(score * EVAL_SEQUENCES))
