"""Bulk recording, lossless adds and .hlog round trips through HdrHistogram_py's own reader."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from tailmark.client import hlog


def lognormal_ns(n: int, seed: int) -> np.ndarray:
    # ~1 ms median with a long tail reaching seconds
    return np.random.default_rng(seed).lognormal(np.log(1e6), 1.5, n).astype(np.int64)


def one_by_one(values: np.ndarray) -> HdrHistogram:
    histogram = hlog.new_histogram()
    for value in values.tolist():
        histogram.record_value(value)
    return histogram


def test_bulk_equals_record_value(assert_same_histogram) -> None:
    values = lognormal_ns(100_000, 1)
    bulk = hlog.new_histogram()
    assert hlog.record_bulk([bulk], values) == 0
    reference = one_by_one(values)
    assert_same_histogram(bulk, reference)
    assert bulk.encode() == reference.encode()
    assert bulk.get_total_count() == 100_000


def test_bulk_matches_at_every_bucket_boundary(assert_same_histogram) -> None:
    h = hlog.new_histogram()
    powers = np.array([1 << k for k in range(43)], dtype=np.int64)
    values = np.unique(np.concatenate([[0, 1, 2, 3], powers - 1, powers, powers + 1, [hlog.HIGHEST_NS]]))
    values = values[values <= hlog.max_recordable(h)]
    expected = [h._counts_index_for(v) for v in values.tolist()]
    assert hlog.counts_indices(h, values).tolist() == expected
    bulk = hlog.new_histogram()
    hlog.record_bulk([bulk], values)
    assert_same_histogram(bulk, one_by_one(values))


def test_bulk_rejects_what_record_value_rejects(assert_same_histogram) -> None:
    top = hlog.max_recordable(hlog.new_histogram())
    values = np.array([-5, -1, 0, 7, top, top + 1, 2**62], dtype=np.int64)
    bulk = hlog.new_histogram()
    assert hlog.record_bulk([bulk], values) == 4
    reference = hlog.new_histogram()
    accepted = [reference.record_value(v) for v in values.tolist()]
    assert accepted.count(False) == 4
    assert_same_histogram(bulk, reference)
    assert hlog.record_bulk([bulk], np.array([-3], dtype=np.int64)) == 1
    assert bulk.get_total_count() == 3


def test_bulk_in_batches_into_several_histograms(assert_same_histogram) -> None:
    """Small batches take the scattered-add path, large ones bincount; both accumulate exactly."""
    values = lognormal_ns(30_000, 2)
    a, b = hlog.new_histogram(), hlog.new_histogram()
    for chunk in np.array_split(values, [10, 11, 500, 20_000]):
        hlog.record_bulk([a, b], chunk)
    reference = one_by_one(values)
    assert_same_histogram(a, reference)
    assert_same_histogram(b, reference)
    with pytest.raises(ValueError, match="one layout"):
        hlog.record_bulk([a, HdrHistogram(1, 60_000_000, 3)], values[:5])


def test_add_into_empty_keeps_min(assert_same_histogram) -> None:
    values = lognormal_ns(5000, 3) + 10_000
    src = one_by_one(values)
    dest = hlog.new_histogram()
    hlog.add_into(dest, src)
    assert dest.get_min_value() == src.get_min_value() > 0
    assert_same_histogram(dest, src)
    hlog.add_into(dest, hlog.new_histogram())  # adding an empty one changes nothing (upstream add(): min 0)
    assert dest.get_min_value() > 0
    assert_same_histogram(dest, src)


def test_add_into_decoded_halves_equals_all(assert_same_histogram) -> None:
    values = lognormal_ns(20_000, 4)
    total = hlog.new_histogram()
    for half in (values[::2], values[1::2]):
        part = hlog.new_histogram()
        hlog.record_bulk([part], half)
        hlog.add_into(total, hlog.decode(part.encode()))
    assert_same_histogram(total, one_by_one(values))


def test_decode_refuses_another_layout() -> None:
    other = HdrHistogram(1, 60_000_000, 2)
    other.record_value(5)
    with pytest.raises(hlog.HlogError, match=r"1\.\.60000000 at 2 significant figures"):
        hlog.decode(other.encode())


def test_reset_fast_empties_and_keeps_working(assert_same_histogram) -> None:
    h = hlog.new_histogram()
    hlog.record_bulk([h], lognormal_ns(1000, 5))
    hlog.reset_fast(h)
    assert h.get_total_count() == 0
    assert h.encode() == hlog.new_histogram().encode()
    values = lognormal_ns(1000, 6)
    hlog.record_bulk([h], values)
    assert_same_histogram(h, one_by_one(values))


def write_log(histograms: list[tuple[str, float, float, HdrHistogram]], start_time_s: float = 1_700_000_000.25) -> str:
    out = io.StringIO()
    writer = hlog.HlogWriter(out)
    writer.output_header(start_time_s, comment="[test]")
    for tag, start, end, histogram in histograms:
        writer.output_interval_histogram(histogram, start, end, tag=tag)
    return out.getvalue()


def test_writer_lines_fix_upstream_bugs() -> None:
    h = hlog.new_histogram()
    h.record_value(2_500_000)  # 2.5 ms: upstream's "//" would print 2.000000
    text = write_log([("s/c/intended_to_done", 0.0, 1.0, h)])
    lines = text.splitlines()
    assert lines[0] == "#[test]"
    assert lines[1] == "#[Histogram log format version 1.2]"
    assert re.fullmatch(
        r"#\[StartTime: 1700000000\.250000 \(seconds since epoch\), 2023-11-14 22:13:20\.250\+00:00\]", lines[2]
    )
    assert lines[3] == "#[BaseTime: 1700000000.250000 (seconds since epoch)]"
    assert lines[4].startswith('"StartTimestamp"')
    tag, start, length, max_ms, blob = lines[5].split(",")
    assert (tag, start, length) == ("Tag=s/c/intended_to_done", "0.000000", "1.000000")  # start 0 kept
    assert float(max_ms) == pytest.approx(2.5, rel=1e-3)
    assert hlog.decode(blob).get_total_count() == 1


def test_writer_refuses_bad_tags_and_intervals() -> None:
    out = io.StringIO()
    writer = hlog.HlogWriter(out)
    writer.output_interval_histogram(hlog.new_histogram(), 0.0, 1.0)  # no tag: an untagged line
    assert out.getvalue().startswith("0.000000,1.000000,0.000000,HISTF")
    for bad in ("a,b", "a b", "tab\there"):
        with pytest.raises(hlog.HlogError, match="without commas or whitespace"):
            writer.output_interval_histogram(hlog.new_histogram(), 0.0, 1.0, tag=bad)
    with pytest.raises(hlog.HlogError, match="not a forward interval"):
        writer.output_interval_histogram(hlog.new_histogram(), 2.0, 1.0, tag="x")


def test_round_trip_through_upstream_reader(tmp_path, assert_same_histogram) -> None:
    intervals = []
    for i in range(5):
        for tag in ("srv/a/intended_to_done", "srv/b/send_lag"):
            h = hlog.new_histogram()
            hlog.record_bulk([h], lognormal_ns(100 * (i + 1), 10 * i + len(tag)))
            intervals.append((tag, float(i), float(i + 1), h))
    intervals.append(("srv/a/intended_to_done", 5.0, 5.25, hlog.new_histogram()))  # an empty interval
    path = tmp_path / "run.hlog"
    path.write_text(write_log(intervals))

    reader = HistogramLogReader(str(path), hlog.new_histogram())
    try:
        for tag, start, end, written in intervals:
            read = reader.get_next_interval_histogram(range_start_time_sec=-1.0)
            assert read is not None
            assert read.get_tag() == tag
            assert read.get_start_time_stamp() / 1000.0 == pytest.approx(1_700_000_000.25 + start)
            assert (read.get_end_time_stamp() - read.get_start_time_stamp()) / 1000.0 == pytest.approx(end - start)
            assert_same_histogram(read, written)
        assert reader.get_next_interval_histogram() is None
    finally:
        reader.close()

    got = list(hlog.read_hlog(path))
    assert [(i.tag, i.start_s, i.length_s) for i in got] == [(t, s, e - s) for t, s, e, _ in intervals]
    for interval, (_, _, _, written) in zip(got, intervals, strict=True):
        assert_same_histogram(interval.histogram, written)


def test_read_hlog_reports_a_damaged_line(tmp_path) -> None:
    h = hlog.new_histogram()
    h.record_value(1000)
    text = write_log([("t", 0.0, 1.0, h), ("t", 1.0, 2.0, h)])
    path = tmp_path / "cut.hlog"
    path.write_text(text[: len(text) - 20] + "\n")  # the last line cut short, as by a crash mid-write
    with pytest.raises(hlog.HlogError, match=r"cut\.hlog: interval 1: cannot decode"):
        list(hlog.read_hlog(path))
