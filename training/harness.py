"""MLPerf Training's timing rules for one run.

1. Untimed initialisation (``init_start`` … ``init_stop``): seed, model, optimiser. It is capped (MLPerf allows 30
   minutes in the closed division); a run whose initialisation takes longer is refused.
2. The clock starts (``run_start``) before the first touch of the data set: loading is on the clock.
3. Training in epochs counted from 1; evaluation every ``eval_every_epochs`` epochs, on the clock.
4. The clock stops (``run_stop``) at the first evaluation at or above the target, with status ``success``; a run
   that reaches ``max_epochs`` first stops with status ``aborted``.

Before initialisation the data files are dropped from the page cache (``posix_fadvise(DONTNEED)``), MLPerf's
``cache_clear``: the data must come from durable storage, not RAM. The fresh seed is logged once, by rank 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailmark.training.context import RunContext
from tailmark.training.mlperf_log import C, RunLog
from tailmark.training.workload import Trainer, Workload

INIT_CAP_S = 30 * 60.0  # MLPerf closed division


class InitTooLong(Exception):
    """The untimed initialisation ran past its cap."""


@dataclass(frozen=True, slots=True)
class Submission:
    """The submission_* facts every log carries."""

    system: str
    division: str = "closed"  # "open" once a non-tunable hyperparameter is changed or a seed is fixed
    org: str = "tailmark"
    status: str = "onprem"


@dataclass(frozen=True, slots=True)
class EvalPoint:
    epoch: int
    accuracy: float
    elapsed_s: float  # since run_start


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: str  # C.SUCCESS or C.ABORTED
    epochs: int  # epochs trained
    accuracy: float | None  # the last evaluation
    time_to_train_s: float  # run_start to run_stop
    init_s: float
    evals: tuple[EvalPoint, ...]

    @property
    def converged(self) -> bool:
        return self.status == C.SUCCESS


def clear_page_cache(paths: list[Path]) -> int:
    """Ask the kernel to drop these files' cached pages; returns how many files it was asked about."""
    count = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            count += 1
        finally:
            os.close(fd)
    return count


def run_once(
    workload: Workload,
    ctx: RunContext,
    log: RunLog,
    *,
    submission: Submission,
    max_epochs: int | None = None,
    init_cap_s: float = INIT_CAP_S,
    on_eval: Callable[[EvalPoint], None] | None = None,
) -> tuple[RunOutcome, Trainer]:
    """Train ``workload`` from ``ctx.seed`` to its target under MLPerf's timing rules; returns the outcome."""
    spec = workload.spec
    epochs_cap = spec.max_epochs if max_epochs is None else max_epochs
    log.event(C.SUBMISSION_BENCHMARK, spec.benchmark)
    log.event(C.SUBMISSION_DIVISION, submission.division)
    log.event(C.SUBMISSION_ORG, submission.org)
    log.event(C.SUBMISSION_PLATFORM, submission.system)
    log.event(C.SUBMISSION_STATUS, submission.status)
    if ctx.is_main:
        clear_page_cache(list(workload.data_files()))
    ctx.barrier()
    log.event(C.CACHE_CLEAR, True)

    init_started = time.perf_counter()
    log.start(C.INIT_START)
    log.event(C.SEED, ctx.seed)
    trainer = workload.build(ctx)
    for key, value in workload.logged_hparams().items():
        log.event(key, value)
    ctx.barrier()
    init_s = time.perf_counter() - init_started
    if init_s > init_cap_s:
        raise InitTooLong(f"initialisation took {init_s:.0f} s; the cap is {init_cap_s:.0f} s")
    log.end(C.INIT_STOP)

    log.start(C.RUN_START)
    run_started = time.perf_counter()
    sizes = trainer.load_data()
    log.event(C.TRAIN_SAMPLES, sizes.train_samples)
    log.event(C.EVAL_SAMPLES, sizes.eval_samples)

    status, accuracy, epoch, evals = C.ABORTED, None, 0, []
    for epoch in range(1, epochs_cap + 1):
        log.start(C.EPOCH_START, metadata={C.EPOCH_NUM: epoch})
        trainer.train_epoch(epoch)
        log.end(C.EPOCH_STOP, metadata={C.EPOCH_NUM: epoch})
        if epoch % spec.eval_every_epochs:
            continue
        log.start(C.EVAL_START, metadata={C.EPOCH_NUM: epoch})
        accuracy = trainer.evaluate()
        log.event(C.EVAL_ACCURACY, accuracy, metadata={C.EPOCH_NUM: epoch})
        log.end(C.EVAL_STOP, metadata={C.EPOCH_NUM: epoch})
        point = EvalPoint(epoch, accuracy, time.perf_counter() - run_started)
        evals.append(point)
        if on_eval is not None:
            on_eval(point)
        if accuracy >= spec.target:
            status = C.SUCCESS
            break
    time_to_train_s = time.perf_counter() - run_started
    log.end(C.RUN_STOP, metadata={C.STATUS: status})
    outcome = RunOutcome(status, epoch, accuracy, time_to_train_s, init_s, tuple(evals))
    return outcome, trainer
