"""MLPerf Training's score of a set of runs: drop the fastest and the slowest, mean of the rest ("olympic").

A run that did not converge counts as infinitely slow, so it is the one dropped as slowest; more than one
non-converged run invalidates the set. Fewer than three runs cannot be olympic-scored: the mean of the converged
runs is reported, marked invalid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_RUNS = 3
MAX_NOT_CONVERGED = 1


@dataclass(frozen=True, slots=True)
class Score:
    seconds: float | None  # the olympic mean time to train; None when no score can be given
    runs: int
    converged: int
    valid: bool
    reason: str  # why the score is invalid; "" when valid

    @property
    def minutes(self) -> float | None:
        return None if self.seconds is None else self.seconds / 60.0


def olympic_mean(values: list[float]) -> float:
    """Mean after dropping the smallest and the largest value; needs at least three values."""
    if len(values) < MIN_RUNS:
        raise ValueError(f"olympic mean of {len(values)} values; needs at least {MIN_RUNS}")
    ordered = sorted(values)
    return sum(ordered[1:-1]) / (len(ordered) - 2)


def score_runs(times_s: list[float | None]) -> Score:
    """Score runs given their times to train, ``None`` for a run that did not converge."""
    runs, done = len(times_s), [t for t in times_s if t is not None]
    failed = runs - len(done)
    if failed > MAX_NOT_CONVERGED:
        return Score(None, runs, len(done), False, f"{failed} runs did not converge; at most {MAX_NOT_CONVERGED} may")
    if runs < MIN_RUNS:
        mean = sum(done) / len(done) if done else None
        return Score(mean, runs, len(done), False, f"{runs} runs; an olympic score needs at least {MIN_RUNS}")
    ranked = [math.inf if t is None else t for t in times_s]
    return Score(olympic_mean(ranked), runs, len(done), True, "")
