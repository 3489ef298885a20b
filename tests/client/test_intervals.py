"""Percentile intervals from order statistics: coverage by simulation, ranks, histogram reading, queries needed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from support.histograms import histogram_of
from support.runcli import tailmark
from tailmark.client.intervals import (
    interval_from_counts,
    percentile_interval,
    queries_needed,
    rank_interval,
    tail_shares,
)
from tailmark.client.report import console_table
from tailmark.client.results import LATENCIES, ClassResult, RunResult, ScenarioResult, load_results
from tailmark.client.settings import Scenario, ScenarioSettings, resolve
from tailmark.client.verdict import percentile_ns

TRIALS = 400


def _binomial_sd(rate: float) -> float:
    return math.sqrt(rate * (1 - rate) / TRIALS)


@pytest.mark.parametrize(("percentile", "confidence", "n"), [(99.0, 0.95, 2000), (50.0, 0.95, 301), (99.9, 0.9, 5000)])
def test_intervals_cover_the_true_percentile_at_their_stated_rate(percentile, confidence, n) -> None:
    """Samples of a known distribution (exponential, 2 ms mean): the interval holds the true percentile about as
    often as its exact coverage says, and that is at least the confidence asked for, and not much more."""
    rng = np.random.default_rng(20261206)
    mean_ns = 2_000_000
    true = -mean_ns * math.log(1 - percentile / 100)
    ranks = rank_interval(n, percentile, confidence)
    assert confidence <= ranks.coverage <= confidence + 0.03
    hits = 0
    for _ in range(TRIALS):
        values = np.sort(rng.exponential(mean_ns, n))
        lo, hi = interval_from_counts(values, np.ones(n, dtype=np.int64), percentile, confidence)
        hits += lo is not None and hi is not None and lo <= true <= hi
    rate = hits / TRIALS
    assert abs(rate - ranks.coverage) <= 3.5 * _binomial_sd(ranks.coverage), (rate, ranks)


def test_the_simulation_rejects_too_narrow_intervals() -> None:
    """The check can fail: intervals built for 60 % confidence, held to the 95 % coverage, are caught."""
    rng = np.random.default_rng(1)
    true = -2e6 * math.log(0.01)
    hits = 0
    for _ in range(TRIALS):
        values = np.sort(rng.exponential(2e6, 2000))
        lo, hi = interval_from_counts(values, np.ones(2000, dtype=np.int64), 99.0, 0.6)
        hits += lo <= true <= hi
    assert abs(hits / TRIALS - 0.95) > 3.5 * _binomial_sd(0.95)


def test_ranks_are_exact_binomial_bounds() -> None:
    """n = 1000, p99: the 983rd..997th values (hand-checked against the binomial cdf)."""
    ranks = rank_interval(1000, 99.0, 0.95)
    assert (ranks.lower, ranks.upper) == (983, 997)
    # each tail holds at most 2.5 %: moving either end inward drops the coverage under 95 %
    tighter = [rank_interval_coverage(1000, 0.99, ranks.lower + 1, ranks.upper),
               rank_interval_coverage(1000, 0.99, ranks.lower, ranks.upper - 1)]  # fmt: skip
    assert all(c < 0.95 + 0.025 for c in tighter) and min(tighter) < ranks.coverage
    assert rank_interval_coverage(1000, 0.99, ranks.lower, ranks.upper) == pytest.approx(ranks.coverage, abs=1e-9)


def rank_interval_coverage(n: int, p: float, lower: int, upper: int) -> float:
    """P(lower <= B <= upper - 1), B ~ Binomial(n, p), summed exactly with integers."""
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(lower, upper))


def test_too_few_queries_leave_a_side_open() -> None:
    assert rank_interval(100, 99.0, 0.95).upper == 101  # no rank above p99 of 100 queries at 95 %
    hist = histogram_of([1_000_000 + i for i in range(100)])
    lo, hi = percentile_interval(hist, 99.0)
    assert lo is not None and hi is None
    assert percentile_interval(histogram_of([]), 99.0) == (None, None)


def test_histogram_interval_brackets_the_reported_percentile() -> None:
    """Read with the project's rank rule on bucket upper edges: lo <= reported p99 <= hi."""
    rng = np.random.default_rng(7)
    hist = histogram_of(rng.exponential(2e6, 5000))
    lo, hi = percentile_interval(hist, 99.0)
    p99 = percentile_ns(hist, 99.0)
    assert lo is not None and hi is not None and lo < p99 < hi
    assert hist.get_highest_equivalent_value(lo) == lo  # an upper edge, as every reported value


def test_queries_needed_meets_its_width() -> None:
    n = queries_needed(99.0, confidence=0.95, tail_error=0.1)
    low, high = tail_shares(n, 99.0, 0.95)
    assert low >= 98.9 and high <= 99.1
    assert 30_000 < n < 45_000  # normal approximation: 1.96^2 * 0.99 / (0.1^2 * 0.01) = 38,032
    half = queries_needed(99.0, confidence=0.95, tail_error=0.2)
    assert n / 5 < half < n / 3  # a twice wider interval needs about a quarter of the queries
    assert queries_needed(99.9, confidence=0.95, tail_error=0.1) > 9 * n


def test_queries_command() -> None:
    run = tailmark("queries", "--percentile", "99", "--confidence", "0.95", "--tail-error", "0.1", "--rate", "150")
    assert run.returncode == 0, run.stderr
    n = queries_needed(99.0, confidence=0.95, tail_error=0.1)
    assert f"{n:,}" in run.stdout and "p98.9" in run.stdout and "p99.1" in run.stdout
    assert "at 150/s" in run.stdout
    bad = tailmark("queries", "--percentile", "100")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    # a run that reported its p99 correlated x2.5: that many times the queries
    correlated = tailmark("queries", "--tail-error", "0.1", "--correlation", "2.5", "--rate", "100")
    assert correlated.returncode == 0, correlated.stderr
    assert (
        f"{n:,} independent queries, x2.5" in correlated.stdout
        and f"{math.ceil(n * 2.5):,} queries" in correlated.stdout
    )
    assert f"{math.ceil(n * 2.5) / 100:,.0f} s measured" in correlated.stdout
    refused = tailmark("queries", "--correlation", "0.5")
    assert refused.returncode == 2 and "at least 1" in refused.stderr


def test_results_carry_every_percentile_interval_and_older_files_still_load(tmp_path) -> None:
    """results.json: each class has [lo, hi] for every reported percentile of every latency; a file written before
    intervals existed (no key) still validates."""
    rng = np.random.default_rng(3)
    ns = rng.exponential(2e6, 3000)
    cls = ClassResult("default", histogram_of(ns), histogram_of(ns * 0.8), histogram_of([50_000] * len(ns)))
    settings = resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=100, min_duration_s=5), mlperf=False)
    run = RunResult(environment={}, scenarios=[ScenarioResult(settings, {"default": cls}, 30.0)])
    path = tmp_path / "results.json"
    run.write(path)
    doc = load_results(path)
    total = doc["scenarios"][0]["classes"]["all"]
    intervals = total["intervals"]
    assert intervals is not None and intervals["confidence"] == 0.95
    for latency in LATENCIES:
        for key in ("p50", "p90", "p95", "p97", "p99", "p99_9"):
            lo, hi = intervals["latency_ms"][latency][key]
            value = total["latency_ms"][latency][key]
            assert lo is not None and lo <= value, (latency, key)
            assert hi is None or value <= hi, (latency, key)
    lo, hi = intervals["latency_ms"]["intended_to_done"]["p99"]
    assert (lo * 1e6, hi * 1e6) == pytest.approx(percentile_interval(cls.intended_to_done, 99.0), rel=1e-6)
    for c in doc["scenarios"][0]["classes"].values():
        del c["intervals"]
    path.write_text(json.dumps(doc))
    assert "intervals" not in load_results(path)["scenarios"][0]["classes"]["all"]
    assert "interval" not in console_table(load_results(path))  # the report leaves the line out
