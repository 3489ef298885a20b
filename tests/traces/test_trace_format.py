"""Reader and writer of the tailmark trace format: round trips, exactness, errors with FILE:LINE, memory."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest

from tailmark.traces.arrival import Arrival
from tailmark.traces.format import Record, TraceFormatError, format_offset, to_ns
from tailmark.traces.generators import poisson
from tailmark.traces.reader import read_arrivals, read_records
from tailmark.traces.transforms import limit
from tailmark.traces.writer import write_trace

HEADER = '{"format": "tailmark-trace", "version": 1, "time_unit": "ms"}\n'

FULL = [
    Record(0),
    Record(1_000_000_001, "chat", 4, 7, 0, 250_000_000, 374, 44),
    Record(1_000_000_001, "chat-2", 1, -1, 128, 0, 0, 0),  # same instant: arrive together
    Record(3_500_000_000, input_tokens=10),
]


@pytest.mark.parametrize("name", ["t.jsonl", "t.csv"])
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_round_trip_is_exact(tmp_path, name, unit):
    path = tmp_path / name
    assert write_trace(path, FULL, time_unit=unit, metadata={"source": "test"}) == 4
    reader = read_records(path)
    assert reader.time_unit == unit
    assert list(reader) == FULL
    assert reader.count == 4


def test_writer_omits_defaults_and_states_unit(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [Arrival(1_500_000)], time_unit="ms")
    lines = path.read_text().splitlines()
    assert '"time_unit": "ms"' in lines[0]
    assert lines[1] == '{"t":1.5}'


def test_writer_refuses_unsorted_and_leaves_no_file(tmp_path):
    path = tmp_path / "t.jsonl"
    with pytest.raises(ValueError, match="before the previous"):
        write_trace(path, [Arrival(5), Arrival(4)])
    assert list(tmp_path.iterdir()) == []


def test_to_ns_and_format_offset_are_exact():
    assert to_ns("0.1", 1_000_000_000) == 100_000_000
    assert to_ns("1.0000000015", 1_000_000_000) == 1_000_000_002  # rounds half up at the ns
    assert to_ns(3, 1000) == 3000
    assert to_ns("1e3", 1_000_000) == 1_000_000_000
    assert format_offset(1_500_000, 1_000_000) == "1.5"
    assert format_offset(7, 1_000_000_000) == "0.000000007"
    with pytest.raises(ValueError):
        to_ns("-1", 1)
    with pytest.raises(ValueError):
        to_ns(True, 1)


def test_read_arrivals_speed_and_payload_rule(write):
    path = write(
        "t.jsonl",
        HEADER + '{"t": 10, "input_tokens": 100, "output_tokens": 20, "deadline": 50}\n'
        '{"t": 20, "payload": 7, "input_tokens": 100}\n{"t": 30}\n',
    )
    arrivals = list(read_arrivals(path, speed=2.0))
    assert [a.offset_ns for a in arrivals] == [5_000_000, 10_000_000, 15_000_000]
    assert [a.payload_size for a in arrivals] == [100, 7, 0]  # explicit payload wins
    assert arrivals[0].deadline_ns == 50_000_000  # deadlines are budgets: not scaled
    assert all(isinstance(a, Arrival) for a in arrivals)
    total = list(read_arrivals(path, payload_from="total"))
    assert total[0].payload_size == 120
    with pytest.raises(ValueError, match="speed"):
        read_arrivals(path, speed=0)


def test_csv_variant_with_comments_and_subset_of_columns(write):
    path = write("t.csv", "# source: hand\nclass,t_us\nchat,1.5\n,2\n")
    reader = read_records(path)
    assert [(r.offset_ns, r.traffic_class) for r in reader] == [(1500, "chat"), (2000, "default")]
    assert reader.comments == ["source: hand"]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (HEADER + '{"t": 1}\n{"t": 2,,}\n', 3, "invalid JSON"),
        (HEADER + '{"t": 1}\n{"t": 2, "batchsize": 3}\n', 3, "unknown field 'batchsize'"),
        (HEADER + '{"t": -1}\n', 2, "negative"),
        (HEADER + '{"t": 1, "batch": 0}\n', 2, "batch 0 is below 1"),
        (HEADER + '{"t": 1, "class": ""}\n', 2, "class"),
        (HEADER + '{"batch": 2}\n', 2, 'no offset "t"'),
        (HEADER + "[1, 2]\n", 2, "not a JSON object"),
        (HEADER + '{"t": 5}\n\n{"t": 4}\n', 4, "earlier than the previous row's 5 ms; sort the trace or pass --sort"),
        ('{"t": 1}\n', 1, "first line must be the header"),
        ('{"format": "tailmark-trace", "version": 1, "time_unit": "min"}\n{"t": 1}\n', 1, "time unit 'min'"),
        ("t_ms,batch\n1,2,3\n", 2, "3 columns, the header has 2"),
        ("t_ms,deadline_s\n1,2\n", 1, "must use unit ms"),
        ("when,batch\n1,2\n", 1, "needs a time column"),
    ],
)
def test_bad_input_names_file_and_line(write, text, line, needle):
    path = write("bad.jsonl", text)
    with pytest.raises(TraceFormatError) as err:
        list(read_arrivals(path))
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert needle in str(err.value)
    assert err.value.line == line


@pytest.mark.parametrize("text", ["", "\n\n", HEADER, HEADER + "\n"])
def test_empty_trace_is_an_error(write, text):
    path = write("empty.jsonl", text)
    with pytest.raises(TraceFormatError, match=r"no arrivals|empty file"):
        list(read_arrivals(path))


def test_missing_file_is_a_trace_error(tmp_path):
    with pytest.raises(TraceFormatError, match="cannot open"):
        read_arrivals(tmp_path / "nope.jsonl")


def test_sort_buffers_and_sorts_stably(write):
    path = write("u.jsonl", HEADER + '{"t": 5, "class": "a"}\n{"t": 1}\n{"t": 5, "class": "b"}\n')
    got = [(a.offset_ns // 1_000_000, a.traffic_class) for a in read_arrivals(path, sort=True)]
    assert got == [(1, "default"), (5, "a"), (5, "b")]


def test_skip_bad_counts_every_skipped_row(write, caplog):
    path = write("s.jsonl", HEADER + '{"t": 1}\nnot json\n{"t": 2, "batch": -3}\n{"t": 3}')  # no final newline
    arrivals = read_arrivals(path, skip_bad=True)
    assert [a.offset_ns for a in arrivals] == [1_000_000, 3_000_000]
    assert arrivals.skipped == 2
    assert arrivals.reader.skipped_lines == [3, 4]
    assert "skipped 2 malformed rows" in caplog.text


def test_skip_bad_never_hides_an_all_bad_trace(write):
    path = write("s.jsonl", HEADER + "x\ny\n")
    with pytest.raises(TraceFormatError, match=r"no arrivals \(2 malformed rows skipped\)"):
        list(read_arrivals(path, skip_bad=True))


def _peak_bytes_reading(path) -> tuple[int, int]:
    tracemalloc.start()
    n = sum(1 for _ in read_arrivals(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return n, peak


def test_streaming_reader_memory_does_not_grow_with_trace_length(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_trace(small, limit(poisson(1000.0, seed=1), count=10_000))
    write_trace(large, limit(poisson(1000.0, seed=1), count=100_000))
    n_small, peak_small = _peak_bytes_reading(small)
    n_large, peak_large = _peak_bytes_reading(large)
    assert (n_small, n_large) == (10_000, 100_000)
    # a list of 100k Arrivals alone would take > 10 MB; the reader stays flat
    assert peak_large < 512 * 1024
    assert peak_large < 2 * peak_small + 64 * 1024


def test_close_stops_early(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, limit(poisson(100.0), count=100))
    reader = read_arrivals(path)
    assert len(list(itertools.islice(reader, 3))) == 3
    reader.close()
    assert reader.reader._file.closed
