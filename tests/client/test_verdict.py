"""Verdict: LoadGen's early-stopping numbers, each rule at its boundary, and judge() for every scenario."""

from __future__ import annotations

import math

import numpy as np
import pytest

from support.histograms import histogram_of
from tailmark.client.settings import Scenario, ScenarioSettings, resolve
from tailmark.client.traffic_classes import parse_classes
from tailmark.client.verdict import (
    Check,
    LatencyCounts,
    Verdict,
    count_over,
    early_stopping,
    early_stopping_count,
    early_stopping_estimate_ns,
    judge,
    latency_bound,
    min_duration,
    min_passing_queries,
    min_queries,
    no_errors,
    percentile_ns,
    percentile_rank,
    value_at_rank,
)

MS = 1_000_000


# Minimum total queries (under + over) for t queries over the bound: LoadGen's printed 64 and 662, and the
# table recomputed with the rules' formula (reference loadgen.md §2).
@pytest.mark.parametrize(
    ("percentile", "expected"),
    [
        (90.0, [44, 64, 197, 1246, 10722]),
        (97.0, [152, 219, 667, 4182, 35831]),
        (99.0, [459, 662, 2010, 12571, 107569]),
        (99.9, [4603, 6636, 20140, 125826, 1076032]),
    ],
)
def test_min_passing_queries_matches_loadgen(percentile: float, expected: list[int]) -> None:
    assert [min_passing_queries(t, percentile) for t in (0, 1, 10, 100, 1000)] == expected


def test_min_passing_queries_is_monotonic_and_exceeds_the_naive_count() -> None:
    needed = [min_passing_queries(t, 99.0) for t in range(0, 50)]
    assert needed == sorted(needed) and len(set(needed)) == len(needed)
    assert all(n > t / 0.01 for t, n in enumerate(needed))


@pytest.mark.parametrize(("over", "needed"), [(0, 459), (1, 662)])
def test_early_stopping_p99_boundary(over: int, needed: int) -> None:
    assert early_stopping(LatencyCounts(needed, over), 99.0, 10 * MS).passed
    check = early_stopping(LatencyCounts(needed - 1, over), 99.0, 10 * MS)
    assert not check.passed
    assert "at least 1 more queries" in check.recommendation


@pytest.mark.parametrize(("over", "needed"), [(0, 44), (1, 64)])
def test_early_stopping_p90_boundary(over: int, needed: int) -> None:
    assert early_stopping(LatencyCounts(needed, over), 90.0, MS).passed
    assert not early_stopping(LatencyCounts(needed - 1, over), 90.0, MS).passed


def test_early_stopping_reads_a_histogram_and_counts_failures_as_over() -> None:
    hist = histogram_of([2 * MS] * 661 + [50 * MS])  # 662 queries, 1 over a 10 ms bound
    assert count_over(hist, 10 * MS) == 1
    assert early_stopping(hist, 99.0, 10 * MS).passed
    failed = early_stopping(hist, 99.0, 10 * MS, failed=1)  # 663 queries, 2 over: needs 847
    assert not failed.passed and "2 over" in failed.detail
    assert f"needs >= {min_passing_queries(2, 99.0)}" in failed.detail


def _binom_cdf(t: int, n: int, q: float) -> float:
    return sum(math.comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(t + 1))


@pytest.mark.parametrize("over", [2, 3, 7])
def test_min_passing_queries_against_an_exact_binomial(over: int) -> None:
    # Independent oracle: the smallest n with P(Binomial(n, 0.01) <= over) <= 1 - 0.99.
    n = min_passing_queries(over, 99.0)
    assert _binom_cdf(over, n, 0.01) <= 0.01 < _binom_cdf(over, n - 1, 0.01)


def test_count_over_treats_the_straddling_bucket_as_over() -> None:
    # At 3 digits, 10_000_500 shares a bucket whose upper edge is above 10_000_000.
    hist = histogram_of([10_000_000 - 20_000, 10_000_500, 20_000_000])
    assert count_over(hist, 10_000_000) == 2
    assert count_over(hist, 30_000_000) == 0


def test_percentile_rank_is_loadgens_sorted_index() -> None:
    assert percentile_rank(100, 99.0) == 100  # sorted[99] is the largest of 100
    assert percentile_rank(1000, 99.9) == 1000
    assert percentile_rank(1000, 50.0) == 501
    assert percentile_rank(10, 99.9) == 10


def test_percentile_and_rank_match_numpy_within_bucket_precision() -> None:
    values = np.random.default_rng(7).lognormal(mean=14, sigma=1, size=20_000).astype(np.int64) + 1
    hist, ordered = histogram_of(values), np.sort(values)
    for pct in (50.0, 90.0, 99.0, 99.9):
        exact = ordered[len(values) * round(pct * 1000) // 100_000]
        assert exact <= percentile_ns(hist, pct) <= exact * 1.001
    assert value_at_rank(hist, 1) >= ordered[0] and value_at_rank(hist, 10**9) >= ordered[-1]
    assert value_at_rank(histogram_of([]), 5) == 0


def test_early_stopping_estimate_discards_the_slowest() -> None:
    # 64 queries at p90 -> t = 1: the estimate is the slowest query itself (LoadGen "at least 64").
    assert (
        early_stopping_estimate_ns(histogram_of([MS] * 63 + [9 * MS]), 90.0) == histogram_of([9 * MS]).get_max_value()
    )
    assert early_stopping_estimate_ns(histogram_of([MS] * 63), 90.0) is None
    # 197 queries at p90 -> t = 10 (197 = min for 10 over): drop the 9 slowest, report the 10th slowest.
    values = list(range(1, 198))
    estimate = early_stopping_estimate_ns(histogram_of(np.array(values) * MS), 90.0)
    assert estimate is not None and 188 * MS <= estimate <= 188 * MS * 1.001


def test_early_stopping_estimate_is_above_the_plain_percentile() -> None:
    values = np.random.default_rng(1).exponential(MS, 80_001).astype(np.int64) + 1000
    hist = histogram_of(values)
    estimate = early_stopping_estimate_ns(hist, 90.0)
    assert estimate is not None
    assert percentile_ns(hist, 90.0) < estimate <= np.quantile(values, 0.91) * 1.001


def test_early_stopping_count_needs_64_at_p90() -> None:
    assert early_stopping_count(histogram_of([MS] * 64), 90.0).passed
    check = early_stopping_count(histogram_of([MS] * 63), 90.0)
    assert not check.passed and "1 more" in check.recommendation


def test_min_duration_and_min_queries_boundaries() -> None:
    assert min_duration(10.0, 10.0).passed
    short = min_duration(9.999, 10.0)
    assert not short.passed and "10 s" in short.recommendation
    assert "target_qps" in min_duration(1.0, 10.0, offline=True).recommendation
    assert min_queries(100, 100).passed
    assert not min_queries(99, 100).passed and "1 more" in min_queries(99, 100).recommendation


def test_latency_bound_boundary_and_empty() -> None:
    hist = histogram_of([MS] * 99 + [5 * MS])  # p99 of 100 is the largest (LoadGen's rank)
    top = hist.get_max_value()
    assert latency_bound(hist, top).passed
    failed = latency_bound(hist, top - 1)
    assert not failed.passed and failed.recommendation == "Reduce target QPS to improve latency"
    assert not latency_bound(histogram_of([]), 10 * MS).passed


def test_no_errors_lists_statuses() -> None:
    assert no_errors({}, 10).passed
    check = no_errors({"DEADLINE_EXCEEDED": 3, "UNAVAILABLE": 1}, 100)
    assert not check.passed and check.detail == "4 of 100 queries failed (DEADLINE_EXCEEDED 3, UNAVAILABLE 1)"


def test_verdict_lists_every_failing_reason() -> None:
    verdict = Verdict((Check("a", True, "ok"), Check("b", False, "too short", "run longer"), Check("c", False, "x")))
    assert not verdict.valid and verdict.label == "INVALID"
    assert verdict.reasons == ["b: too short", "c: x"]
    assert [c.name for c in verdict.failed] == ["b", "c"]
    assert Verdict(()).valid


def _settings(scenario: Scenario, **kw):
    if scenario is Scenario.TRACE:
        kw["trace_path"] = "t.csv"
    if scenario is Scenario.MIXED:  # a class of a mixed scenario is judged as an open-loop scenario
        kw["classes"] = parse_classes([{"name": "a", "arrival": {"process": "fixed", "rate_qps": 1}}])
    return resolve(ScenarioSettings(scenario=scenario, min_duration_s=1.0, **kw), mlperf=False)


_EXPECTED_CHECKS = {
    Scenario.SINGLE_STREAM: ["min_duration", "min_queries", "early_stopping", "client_bound", "errors"],
    Scenario.MULTI_STREAM: ["min_duration", "min_queries", "early_stopping", "client_bound", "errors"],
    Scenario.OFFLINE: ["min_duration", "min_queries", "client_bound", "errors"],
    Scenario.SERVER: ["min_duration", "min_queries", "early_stopping", "latency_bound", "client_bound", "errors"],
    Scenario.POISSON: ["min_duration", "min_queries", "client_bound", "errors"],
    Scenario.FIXED_INTERVAL: ["min_duration", "min_queries", "client_bound", "errors"],
    Scenario.TRACE: ["min_duration", "min_queries", "client_bound", "errors"],
    Scenario.CONCURRENCY: ["min_duration", "min_queries", "early_stopping", "client_bound", "errors"],
    Scenario.MIXED: ["min_duration", "min_queries", "client_bound", "errors"],
}


@pytest.mark.parametrize("scenario", list(Scenario))
def test_judge_valid_run(scenario: Scenario) -> None:
    settings = _settings(scenario)
    latency = histogram_of([2 * MS] * 2000)
    verdict = judge(
        settings, duration_s=2.0, latency=latency, send_lag=histogram_of([50_000] * 2000), client_cpu_pct=30
    )
    assert [c.name for c in verdict.checks] == _EXPECTED_CHECKS[scenario]
    assert verdict.valid, verdict.reasons
    if scenario is Scenario.OFFLINE:
        assert verdict.early_stopping_estimate_ns is None
    else:
        assert verdict.early_stopping_estimate_ns == latency.get_max_value()


@pytest.mark.parametrize("scenario", list(Scenario))
def test_judge_invalid_run_names_each_reason(scenario: Scenario) -> None:
    settings = _settings(scenario)
    verdict = judge(
        settings,
        duration_s=0.5,
        latency=histogram_of([2 * MS] * 10),
        send_lag=histogram_of([5 * MS] * 10),
        errors={"UNAVAILABLE": 2},
        client_cpu_pct=99.0,
    )
    assert not verdict.valid
    failed = {c.name for c in verdict.failed}
    assert {"min_duration", "min_queries", "client_bound", "errors"} <= failed
    assert all(c.recommendation for c in verdict.failed)
    client = next(c for c in verdict.checks if c.name == "client_bound")
    assert "CPU saturated" in client.detail and verdict.cause == "client"


@pytest.mark.parametrize("scenario", [Scenario.POISSON, Scenario.FIXED_INTERVAL, Scenario.TRACE])
def test_open_loop_bound_is_optional_and_judged_when_set(scenario: Scenario) -> None:
    settings = _settings(scenario, latency_bound_ms=1.0)
    verdict = judge(settings, duration_s=2.0, latency=histogram_of([2 * MS] * 2000), send_lag=histogram_of([0] * 2000))
    assert {c.name for c in verdict.failed} == {"early_stopping", "latency_bound"}


def test_judge_server_latency_bound_uses_p99() -> None:
    settings = _settings(Scenario.SERVER, target_qps=100, latency_bound_ms=10)
    ok = histogram_of([2 * MS] * 1990 + [30 * MS] * 10)  # 0.5 % over: p99 fine, 10 over needs 2010 queries
    verdict = judge(settings, duration_s=2.0, latency=ok, send_lag=histogram_of([0] * 2000))
    assert [c.name for c in verdict.failed] == ["early_stopping"]
    bad = histogram_of([2 * MS] * 1960 + [30 * MS] * 40)  # 2 % over: p99 = 30 ms
    verdict = judge(settings, duration_s=2.0, latency=bad, send_lag=histogram_of([0] * 2000))
    assert {c.name for c in verdict.failed} == {"early_stopping", "latency_bound"}


def test_judge_offline_counts_samples() -> None:
    settings = resolve(ScenarioSettings(scenario=Scenario.OFFLINE, min_duration_s=1.0, batch_size=4), mlperf=False)
    latency = histogram_of([MS] * 300)  # 300 requests x 4 = 1200 samples >= 1024
    assert judge(settings, duration_s=1.5, latency=latency).valid
    assert not judge(settings, duration_s=1.5, latency=latency, sample_count=1000).valid
