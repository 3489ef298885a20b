"""Reference convergence points (RCPs) and MLPerf's check of a new result's epochs to converge.

An RCP file (``training/rcps/<benchmark>.json``) holds the epochs to converge of at least 2N reference runs of
this project's workload at one global batch size, and the command that produced them. A result passes when its
olympic-mean epochs are at least the smallest mean that a one-sided two-sample t-test (p = 0.05, equal
variances, the reference's population stdev for both) cannot tell apart from the reference's olympic mean.
A result faster than the reference mean but within that bound is normalised by ``reference mean / result mean``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

RCP_DIR = Path(__file__).resolve().parent / "rcps"
ALPHA = 0.05
TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class ReferencePoints:
    benchmark: str
    global_batch_size: int
    epochs_to_converge: tuple[int, ...]
    command: str  # how these points were produced
    platform: str
    created: str

    @classmethod
    def load(cls, path: Path) -> ReferencePoints:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["epochs_to_converge"] = tuple(raw["epochs_to_converge"])
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @property
    def mean(self) -> float:
        ordered = sorted(self.epochs_to_converge)
        return sum(ordered[1:-1]) / (len(ordered) - 2)

    @property
    def stdev(self) -> float:
        points = self.epochs_to_converge
        mu = sum(points) / len(points)
        return math.sqrt(sum((p - mu) ** 2 for p in points) / len(points))


@dataclass(frozen=True, slots=True)
class RcpVerdict:
    passed: bool
    reference_mean: float
    reference_stdev: float
    min_epochs: float  # the smallest acceptable olympic-mean epochs
    max_speedup: float
    result_mean: float
    norm_factor: float  # multiply the score by this (1.0 unless faster than the reference mean)
    message: str


def reference_for(benchmark: str, rcp_dir: Path = RCP_DIR) -> ReferencePoints | None:
    path = rcp_dir / f"{benchmark}.json"
    return ReferencePoints.load(path) if path.is_file() else None


def one_sided_p(result_mean: float, reference_mean: float, stdev: float, n_result: int, n_reference: int) -> float:
    """P-value of "the result converges in fewer epochs than the reference" (one-sided, pooled variance)."""
    from scipy.stats import ttest_ind_from_stats

    t_stat, p_two_sided = ttest_ind_from_stats(
        result_mean, stdev, n_result, reference_mean, stdev, n_reference, equal_var=True
    )
    return p_two_sided / 2 if t_stat < 0 else 1 - p_two_sided / 2


def min_acceptable_mean(reference_mean: float, stdev: float, n_reference: int, n_result: int) -> float:
    """Binary search for the smallest mean the t-test cannot reject (at the reference mean, p is 0.5)."""
    if stdev == 0:
        return reference_mean
    low, high = 0.0, reference_mean
    while high - low > TOLERANCE:
        mid = (low + high) / 2
        if one_sided_p(mid, reference_mean, stdev, n_result, n_reference) > ALPHA:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def check(reference: ReferencePoints, result_epochs: list[int], planned_runs: int) -> RcpVerdict:
    """Compare converged runs' epochs with the reference; ``planned_runs`` is the N of the result set."""
    if len(reference.epochs_to_converge) < 3 or not result_epochs:
        raise ValueError("an RCP check needs at least 3 reference points and one converged run")
    ordered = sorted(result_epochs)
    result_mean = sum(ordered[1:-1]) / (len(ordered) - 2) if len(ordered) >= 3 else sum(ordered) / len(ordered)
    n_result = max(planned_runs - 2, 1)
    n_reference = len(reference.epochs_to_converge) - 2
    ref_mean, stdev = reference.mean, reference.stdev
    floor = min_acceptable_mean(ref_mean, stdev, n_reference, n_result)
    passed = result_mean >= floor
    norm = ref_mean / result_mean if passed and result_mean < ref_mean else 1.0
    verb = "PASSED" if passed else "FAILED"
    message = (
        f"RCP test {verb}: mean {result_mean:.2f} epochs vs reference {ref_mean:.2f} ± {stdev:.2f}"
        f" (minimum {floor:.2f}, {reference.benchmark} at global batch {reference.global_batch_size})"
    )
    return RcpVerdict(passed, ref_mean, stdev, floor, ref_mean / floor, result_mean, norm, message)
