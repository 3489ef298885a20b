"""Arrival processes: statistics of the seeded streams, exactness, laziness, refusals, and one stream for
`tailmark run` and `tailmark trace gen`."""

from __future__ import annotations

import doctest
import itertools
import math
import tracemalloc

import numpy as np
import pytest

from tailmark.cli import main
from tailmark.client import schedule
from tailmark.client.run import _schedule
from tailmark.client.schedule import (
    ScheduleError,
    fixed_interval,
    merge,
    poisson,
    take_duration,
    timestamp_file,
    timestamps,
)
from tailmark.client.settings import Scenario, ScenarioSettings, resolve
from tailmark.traces import generators
from tailmark.traces.arrival import Arrival
from tailmark.traces.reader import read_arrivals

N = 10_000


def offsets(arrivals, n: int = N) -> np.ndarray:
    return np.array([a.offset_ns for a in itertools.islice(arrivals, n)], dtype=np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2024])
@pytest.mark.parametrize("rate_qps", [10.0, 1000.0, 50_000.0])
def test_poisson_rate_cv_and_ks(rate_qps: float, seed: int) -> None:
    offs = offsets(poisson(rate_qps, seed=seed), N + 1)
    assert offs[0] == 0  # the first arrival is at the start; N gaps follow
    gaps = np.diff(offs).astype(np.float64)
    assert np.all(gaps >= 0)
    achieved_qps = N / (offs[-1] / 1e9)
    assert achieved_qps == pytest.approx(rate_qps, rel=0.03)
    cv = gaps.std() / gaps.mean()
    assert abs(cv - 1.0) < 0.05
    # Kolmogorov-Smirnov against the exponential CDF of the *requested* rate (5 % critical value)
    mean_gap_ns = 1e9 / rate_qps
    x = np.sort(gaps)
    cdf = 1.0 - np.exp(-x / mean_gap_ns)
    i = np.arange(1, N + 1)
    d = max(np.max(i / N - cdf), np.max(cdf - (i - 1) / N))
    assert d < 1.36 / math.sqrt(N)


def test_poisson_ks_rejects_a_wrong_rate() -> None:
    """The KS check above has teeth: the same stream fails against a rate 5 % off."""
    gaps = np.diff(offsets(poisson(1000.0, seed=3), N + 1)).astype(np.float64)
    x = np.sort(gaps)
    cdf = 1.0 - np.exp(-x / (1e9 / 1050.0))
    i = np.arange(1, N + 1)
    d = max(np.max(i / N - cdf), np.max(cdf - (i - 1) / N))
    assert d > 1.36 / math.sqrt(N)


def test_poisson_offsets_match_exact_running_sum() -> None:
    """No drift across chunks: offset k is the floor of the exact sum of the first k gaps (offset 0 is 0)."""
    n = 3 * generators.BLOCK + 5
    got = offsets(poisson(777.0, seed=5), n)
    rng = np.random.default_rng(5)
    gaps = np.concatenate([rng.exponential(1e9 / 777.0, generators.BLOCK) for _ in range(4)])[: n - 1]
    exact = np.concatenate([[0], np.floor(np.cumsum(gaps.astype(np.longdouble))).astype(np.int64)])
    assert np.max(np.abs(got - exact)) <= 1  # float rounding of the per-chunk sums, never accumulated
    assert got.dtype == np.int64 and np.all(np.diff(got) >= 0)


def test_poisson_same_seed_same_schedule_different_seed_differs() -> None:
    a = list(itertools.islice(poisson(500.0, seed=42, traffic_class="x"), 5000))
    b = list(itertools.islice(poisson(500.0, seed=42, traffic_class="x"), 5000))
    c = list(itertools.islice(poisson(500.0, seed=43, traffic_class="x"), 5000))
    assert a == b
    assert a != c
    assert all(isinstance(arrival, Arrival) and arrival.traffic_class == "x" for arrival in a)
    assert all(type(arrival.offset_ns) is int for arrival in a[:10])


def test_poisson_memory_is_constant() -> None:
    stream = poisson(1e6, seed=9)
    next(stream)  # the first chunk's buffers exist before measuring
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        last = max(itertools.islice(stream, 1_000_000))  # consumed one at a time, nothing kept
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last.offset_ns > 0
    assert peak - base < 1_000_000


def test_fixed_interval_exact_offsets_and_zero_cv() -> None:
    offs = offsets(fixed_interval(3.0), 10)
    assert offs.tolist() == [k * 1_000_000_000 // 3 for k in range(10)]
    gaps = np.diff(offsets(fixed_interval(1000.0)))
    assert gaps.std() / gaps.mean() == 0.0
    # no drift after a million periods: offset k is computed from k alone
    far = next(itertools.islice(fixed_interval(7.0), 10**6, None))
    assert far.offset_ns == 10**6 * 10**9 // 7
    phased = [a.offset_ns for a in itertools.islice(fixed_interval(0.5, phase_ns=10), 3)]
    assert phased == [10, 2 * 10**9 + 10, 4 * 10**9 + 10]


@pytest.mark.parametrize("factory", [lambda r: poisson(r, seed=0), fixed_interval])
@pytest.mark.parametrize("rate", [0, -1, -0.5, float("nan"), float("inf")])
def test_bad_rates_refused(factory, rate: float) -> None:
    with pytest.raises(ValueError, match=r"rate_qps=.* requested; must be"):
        next(iter(factory(rate)))


def test_negative_rate_message() -> None:
    with pytest.raises(ValueError) as info:
        poisson(-1, seed=0)  # refused at the call, before any arrival is drawn
    assert str(info.value) == "rate_qps=-1 requested; must be > 0"


def test_timestamps_units_and_validation() -> None:
    assert [a.offset_ns for a in timestamps([0, 0.5, 0.5, 2])] == [0, 500_000_000, 500_000_000, 2_000_000_000]
    assert [a.offset_ns for a in timestamps([1, 2500], unit="us")] == [1000, 2_500_000]
    assert [a.offset_ns for a in timestamps(iter([7, 9]), unit="ns", traffic_class="t")] == [7, 9]
    with pytest.raises(ScheduleError, match=r"offset #2: .*must not decrease"):
        list(timestamps([0, 2, 1]))
    with pytest.raises(ScheduleError, match=r"offset #0: -1 is negative"):
        list(timestamps([-1]))
    with pytest.raises(ScheduleError, match=r"not a finite number"):
        list(timestamps([0, float("nan")]))
    with pytest.raises(ScheduleError, match=r"unit='h'"):
        list(timestamps([0], unit="h"))  # type: ignore[arg-type]


def test_timestamps_is_lazy() -> None:
    stream = timestamps(itertools.count())  # an infinite input works: nothing is materialised
    assert [a.offset_ns for a in itertools.islice(stream, 3)] == [0, 10**9, 2 * 10**9]


def test_timestamp_file_reads_and_skips_comments(tmp_path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("# offsets in seconds\n0\n\n0.0125  # 12.5 ms\n0.0125\n3\n")
    got = list(timestamp_file(path, "replay"))
    assert [a.offset_ns for a in got] == [0, 12_500_000, 12_500_000, 3_000_000_000]
    assert {a.traffic_class for a in got} == {"replay"}


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("0\nabc\n", 2, r"'abc' is not a number of seconds"),
        ("0\n1\n\n-2\n", 4, r"-2.0 is negative"),
        ("1\n0.5\n", 2, r"0.5 s is before the previous offset 1 s"),
        ("inf\n", 1, r"inf is not a finite number"),
    ],
)
def test_timestamp_file_bad_lines_name_path_and_line(tmp_path, text: str, line: int, what: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ScheduleError, match=rf"^{path}:{line}: {what}"):
        list(timestamp_file(path))


def test_timestamp_file_missing(tmp_path) -> None:
    with pytest.raises(ScheduleError, match=r"nope.txt: cannot read"):
        next(timestamp_file(tmp_path / "nope.txt"))


def test_take_duration_stops_an_infinite_schedule() -> None:
    got = list(take_duration(fixed_interval(100.0), 2.0))
    assert len(got) == 200 and got[-1].offset_ns < 2 * 10**9
    arrivals = list(take_duration(poisson(1000.0, seed=1), 5.0))
    assert len(arrivals) == pytest.approx(5000, rel=0.05)
    assert arrivals[-1].offset_ns < 5 * 10**9
    with pytest.raises(ValueError, match=r"duration_s=0 requested"):
        take_duration(fixed_interval(1.0), 0)


def test_merge_orders_by_offset_and_keeps_classes() -> None:
    mixed = list(
        take_duration(
            merge(poisson(300.0, seed=1, traffic_class="bg"), fixed_interval(50.0, traffic_class="probe")), 10.0
        )
    )
    offs = [a.offset_ns for a in mixed]
    assert offs == sorted(offs)
    counts = {c: sum(a.traffic_class == c for a in mixed) for c in ("bg", "probe")}
    assert counts["probe"] == 500
    assert counts["bg"] == pytest.approx(3000, rel=0.05)


def test_examples_in_docstrings() -> None:
    result = doctest.testmod(schedule, extraglobs={"itertools": itertools})
    assert result.attempted >= 5
    assert result.failed == 0


@pytest.mark.parametrize(
    ("kind", "scenario"),
    [("poisson", Scenario.POISSON), ("poisson", Scenario.SERVER), ("fixed", Scenario.FIXED_INTERVAL)],
)
def test_trace_gen_and_run_make_the_same_stream(tmp_path, kind: str, scenario: Scenario) -> None:
    """`tailmark trace gen` (a trace file written by the CLI) and the run's own schedule agree offset for offset."""
    rate, seed, count = 750.0, 2024, 3 * generators.BLOCK  # several draw blocks
    path = tmp_path / f"{kind}.jsonl"
    argv = ["trace", "gen", kind, "--rate", str(rate), "--count", str(count), "--unit", "ns", "-o", str(path)]
    assert main([*argv, "--seed", str(seed)] if kind == "poisson" else argv) == 0
    from_file = [a.offset_ns for a in read_arrivals(path)]
    settings = resolve(ScenarioSettings(scenario=scenario, target_qps=rate, schedule_seed=seed), mlperf=False)
    from_run = [a.offset_ns for a in itertools.islice(_schedule(settings), count)]
    assert len(from_file) == count
    assert from_file == from_run
    assert from_run[0] == 0  # the first arrival at the start, as LoadGen schedules Server queries
