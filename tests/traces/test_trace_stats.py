"""Trace statistics on streams whose answers are known exactly, and the PNG plot."""

from __future__ import annotations

import pytest

from tailmark.traces.arrival import Arrival
from tailmark.traces.format import Record
from tailmark.traces.generators import fixed_interval
from tailmark.traces.stats import format_stats, measure, plot_rate
from tailmark.traces.transforms import limit

S = 1_000_000_000


def test_fixed_interval_stats_are_exact():
    st = measure(limit(fixed_interval(10.0), count=101))  # 0 .. 10 s
    assert st.count == 101
    assert st.span_s == pytest.approx(10.0)
    assert st.mean_rate_qps == pytest.approx(10.0)
    assert st.gap_cv == pytest.approx(0.0, abs=1e-9)
    assert st.peak_1s_qps == 10  # a sliding 1-s window holds 10 arrivals
    assert st.peak_over_mean == pytest.approx(1.0)
    assert st.idle_fraction == 0.0


def test_burst_idle_classes_and_tokens():
    arrivals = [Record(0, "a", input_tokens=10, output_tokens=2)] + [Record(5 * S, "b", batch_size=3)] * 20
    arrivals += [Record(9 * S + 500_000_000, "a", input_tokens=30, output_tokens=4)]
    st = measure(arrivals)
    assert st.count == 22
    assert st.peak_1s_qps == 20  # 20 arrive together at 5 s
    assert st.mean_rate_qps == pytest.approx(21 / 9.5)
    assert st.peak_over_mean == pytest.approx(20 / (21 / 9.5))
    assert st.idle_fraction == pytest.approx(7 / 10)  # bins 1-4 and 6-8 are empty
    assert st.classes == {"a": 2, "b": 20}
    assert st.mean_batch == pytest.approx((2 + 60) / 22)
    assert (st.mean_input_tokens, st.mean_output_tokens) == (20.0, 3.0)
    text = format_stats(st, "x.jsonl")
    assert "arrivals        22" in text and "classes         a 2, b 20" in text and "input mean 20.0" in text


def test_gap_cv_of_alternating_gaps():
    # gaps 1, 3, 1, 3, ...: mean 2, sd 1 -> CV 0.5
    t, arrivals = 0, [Arrival(0)]
    for i in range(1000):
        t += S if i % 2 == 0 else 3 * S
        arrivals.append(Arrival(t))
    assert measure(arrivals).gap_cv == pytest.approx(0.5, rel=1e-6)


def test_empty_stream_is_an_error():
    with pytest.raises(ValueError, match="no arrivals"):
        measure([])


def test_plot_writes_a_png(tmp_path):
    st = measure(limit(fixed_interval(50.0), duration_s=30.0))
    out = plot_rate(st, tmp_path / "rate.png", title="fixed")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
