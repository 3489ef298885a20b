"""client/stability.py: perf_analyzer's within-run rule over windows made of the interval log's intervals."""

from __future__ import annotations

import pytest

from support.histograms import histogram_of
from tailmark.client.compact import Compact
from tailmark.client.stability import StabilitySettings, judge, windows_of
from tailmark.client.timeline import Slice

MS = 1_000_000


def _slices(per_second: list[tuple[int, float]], start_s: float = 10.0) -> list[Slice]:
    """One 1 s interval per (requests, latency ms) pair, every request at that latency."""
    return [
        Slice(start_s + i, 1.0, Compact.of(histogram_of([latency * MS] * count)))
        for i, (count, latency) in enumerate(per_second)
    ]


def test_steady_windows_are_stable_and_a_late_surge_is_not() -> None:
    steady = _slices([(100, 5.0)] * 8)
    doc = judge(steady, (10.0, 18.0), StabilitySettings(windows=3, window_s=2.0))
    assert doc["stable"] is True and [w["queries"] for w in doc["per_window"]] == [200, 200, 200]
    assert [w["rate_qps"] for w in doc["per_window"]] == [100.0] * 3 and doc["per_window"][0]["start_s"] == 12.0
    assert doc["per_window"][0]["mean_ms"] == pytest.approx(5.0, rel=1e-3)
    # the rate holds but the mean latency of the last window is 1.2 x the first's: beyond 10 %
    surge = _slices([(100, 5.0)] * 6 + [(100, 6.0)] * 2)
    doc = judge(surge, (10.0, 18.0), StabilitySettings(windows=3, window_s=2.0))
    assert doc["stable"] is False and "mean latency 4.99" in doc["detail"] and "rate" not in doc["detail"]
    # within a wider tolerance it passes
    assert judge(surge, (10.0, 18.0), StabilitySettings(percentage=25.0, windows=3, window_s=2.0))["stable"] is True


def test_a_falling_rate_or_an_empty_window_is_not_stable() -> None:
    falling = _slices([(100, 5.0)] * 4 + [(80, 5.0)] * 2)
    doc = judge(falling, (10.0, 16.0), StabilitySettings(windows=3, window_s=1.0))
    assert doc["stable"] is False and "rate 80.0..100.0/s" in doc["detail"]
    stalled = _slices([(100, 5.0)] * 4 + [(0, 5.0)])
    doc = judge(stalled, (10.0, 15.0), StabilitySettings(windows=3, window_s=1.0))
    assert doc["stable"] is False and "completed no request" in doc["detail"]


def test_only_whole_intervals_inside_the_window_count_and_too_few_windows_are_not_judged() -> None:
    slices = _slices([(50, 50.0)] + [(100, 5.0)] * 4 + [(10, 90.0)], start_s=0.0)  # warm-up edge, drain tail
    doc = judge(slices, (0.5, 5.5), StabilitySettings(windows=3, window_s=1.0))  # intervals 1..4 lie inside
    assert doc["stable"] is True and [w["start_s"] for w in doc["per_window"]] == [2.0, 3.0, 4.0]
    doc = judge(slices, (0.5, 5.5), StabilitySettings(windows=3, window_s=2.0))
    assert doc["stable"] is None and "holds 2 whole 2 s windows" in doc["detail"] and len(doc["per_window"]) == 2


def test_windows_are_counted_back_from_the_last_interval() -> None:
    groups = windows_of(_slices([(1, 1.0)] * 7), 2.0)
    assert [[s.start_s for s in g] for g in groups] == [[11.0, 12.0], [13.0, 14.0], [15.0, 16.0]]


@pytest.mark.parametrize("bad", [{"percentage": 0.0}, {"windows": 1}, {"window_s": -1.0}])
def test_bad_settings_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="--stability-"):
        StabilitySettings(**bad)


def test_each_scenario_keeps_its_own_interval_lengths(tmp_path) -> None:
    """A scenario that ends writes a partial last interval starting where the next scenario's whole one does:
    the reader keeps each one's own length (in_window places seconds by it)."""
    from tailmark.client import hlog
    from tailmark.client.timeline import read_slices

    path = tmp_path / "latency.hlog"
    handle, writer = hlog.open_log(path, 1_700_000_000.0)
    with handle:
        for scenario, start, end in (("a", 0.0, 1.0), ("b", 0.0, 1.0), ("a", 1.0, 1.4), ("b", 1.0, 2.0)):
            writer.output_interval_histogram(
                histogram_of([5 * MS]), start, end, tag=f"{scenario}/default/intended_to_done"
            )
    slices = read_slices(path)
    assert [s.length_s for s in slices["a"]] == [1.0, pytest.approx(0.4)]
    assert [s.length_s for s in slices["b"]] == [1.0, 1.0] and slices["b"][1].count == 1
