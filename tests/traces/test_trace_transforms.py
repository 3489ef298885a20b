"""Transformations keep order and tokens, stay lazy, and do what their names say."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tailmark.traces import transforms as tr
from tailmark.traces.arrival import Arrival
from tailmark.traces.format import Record
from tailmark.traces.generators import fixed_interval, poisson

S = 1_000_000_000


def _secs(arrivals) -> list[float]:
    return [a.offset_ns / S for a in arrivals]


def test_limit_by_duration_and_count():
    assert len(list(tr.limit(fixed_interval(10.0), duration_s=2.0))) == 20
    assert len(list(tr.limit(fixed_interval(10.0), count=7))) == 7
    assert len(list(tr.limit(fixed_interval(10.0), duration_s=2.0, count=5))) == 5


def test_speed_scales_offsets_not_deadlines():
    recs = [Record(2 * S, deadline_ns=S, input_tokens=9)]
    out = list(tr.speed(recs, 4.0))
    assert out == [Record(S // 2, deadline_ns=S, input_tokens=9)]
    with pytest.raises(ValueError):
        tr.speed(recs, 0)


def test_cut_rebases_and_stops_reading_an_endless_stream():
    window = list(tr.cut(fixed_interval(10.0), 5.0, 6.0))  # would hang if cut read on
    assert _secs(window) == pytest.approx([i / 10 for i in range(10)])
    kept = list(tr.cut(fixed_interval(10.0), 5.0, 6.0, rebase=False))
    assert kept[0].offset_ns == 5 * S
    with pytest.raises(ValueError):
        tr.cut([], 5.0, 4.0)


def test_thin_keeps_the_fraction_and_is_seeded():
    src = list(tr.limit(poisson(1000.0, seed=1), count=50_000))
    kept = list(tr.thin(src, 0.25, seed=2))
    assert len(kept) == pytest.approx(12_500, rel=0.03)
    assert kept == list(tr.thin(src, 0.25, seed=2))
    gaps = np.diff(_secs(kept))
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.04)  # thinned Poisson is Poisson
    with pytest.raises(ValueError):
        tr.thin(src, 0.0)


def test_loop_infers_a_seamless_period_and_re_reads_the_source():
    calls = []

    def source():
        calls.append(1)
        return iter([Arrival(0), Arrival(S), Arrival(2 * S)])

    out = _secs(tr.loop(source, 3))
    assert out == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # period = last + mean gap
    assert len(calls) == 3
    assert _secs(tr.loop(source, 2, period_s=10)) == [0, 1, 2, 10, 11, 12]
    with pytest.raises(ValueError, match="shorter than one pass"):
        list(tr.loop(source, 2, period_s=1))


def test_merge_interleaves_and_labels_classes():
    a = tr.limit(fixed_interval(2.0), count=4)  # 0, .5, 1, 1.5
    b = tr.limit(poisson(3.0, seed=1), count=5)
    out = list(tr.merge([("a", a), ("b", b), (None, iter([Arrival(S // 4, "kept")]))]))
    offsets = [x.offset_ns for x in out]
    assert offsets == sorted(offsets)
    assert [x.traffic_class for x in out].count("a") == 4
    assert [x.traffic_class for x in out].count("b") == 5
    assert "kept" in {x.traffic_class for x in out}


def test_with_deadline_and_relabel():
    out = list(tr.relabel(tr.with_deadline(iter([Arrival(0)]), 0.25), "x"))
    assert out == [Arrival(0, "x", deadline_ns=250_000_000)]


def test_chains_are_lazy():
    chain = tr.speed(tr.thin(tr.cut(poisson(100.0, seed=1), 10.0), 0.5, seed=1), 2.0)
    first = list(itertools.islice(chain, 10))  # an endless source: only laziness lets this return
    assert len(first) == 10
