"""Traffic-class names that results and interval logs cannot carry are refused when the trace is read (issue 10,
item 7): before, they passed the reader and made the recorder raise inside the send task, uncounted."""

from __future__ import annotations

import json

import pytest

from support.runcli import tailmark
from tailmark.traces.format import TraceFormatError, check_class
from tailmark.traces.reader import read_records

HEADER = '{"format": "tailmark-trace", "version": 1, "time_unit": "ms"}\n'

BAD = [
    ("chat/long", "contains '/'"),
    ("a,b", "contains ','"),
    ("two words", "contains ' '"),
    ("tab\there", "contains '\\t'"),
    ("all", "reserved for the aggregate"),
    ("", "not a non-empty string"),
]


@pytest.mark.parametrize(("name", "message"), BAD)
def test_jsonl_row_with_a_bad_class_names_file_and_line(write, name, message):
    path = write("t.jsonl", HEADER + '{"t": 0, "class": "chat"}\n' + json.dumps({"t": 1, "class": name}) + "\n")
    with pytest.raises(TraceFormatError) as info:
        list(read_records(path))
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: class ")
    assert message in str(info.value)


def test_csv_row_with_a_bad_class_names_file_and_line(write):
    path = write("t.csv", 't_ms,class\n0,chat\n# a comment\n5,"my class"\n')
    with pytest.raises(TraceFormatError, match=r":4: class 'my class' contains ' '"):
        list(read_records(path))


@pytest.mark.parametrize("name", ["chat", "default", "GPT-4", "tier.1_a", "größe", "All"])
def test_ordinary_names_pass(name):
    assert check_class(name) == name


def test_trace_stats_refuses_the_file(write):
    path = write("t.jsonl", HEADER + '{"t": 0, "class": "a b"}\n')
    result = tailmark("trace", "stats", str(path))
    assert result.returncode != 0
    assert f"{path}:2: class 'a b' contains ' '" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_refuses_the_trace_in_one_line(server, write, tmp_path):
    rows = "".join(f'{{"t": {i}, "class": "chat"}}\n' for i in range(5))
    path = write("t.jsonl", HEADER + rows + '{"t": 9, "class": "x/y"}\n')
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--scenario", "trace", "--trace", str(path),
        "--warmup", "0", "--out", str(tmp_path / "r"), "--no-progress", "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert f"{path}:7: class 'x/y' contains '/'" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(("name", "message"), BAD)
def test_the_writer_refuses_a_class_the_reader_would_refuse(tmp_path, name, message):
    from tailmark.traces.arrival import Arrival
    from tailmark.traces.writer import write_trace

    out = tmp_path / "t.jsonl"
    rows = [Arrival(0, "chat"), Arrival(1, name)]
    with pytest.raises(ValueError, match=r"^row 2: class ") as info:
        write_trace(out, rows)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the trace nor its temporary file


@pytest.mark.parametrize(("name", "message"), BAD)
def test_trace_gen_refuses_a_bad_class_up_front(tmp_path, name, message):
    out = tmp_path / "t.jsonl"
    result = tailmark("trace", "gen", "poisson", "--rate", "10", "--count", "5", "--class", name, "-o", str(out))
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_trace_merge_refuses_a_bad_class(write, tmp_path):
    path = write("a.jsonl", HEADER + '{"t": 0}\n')
    result = tailmark("trace", "merge", f"{path}=a b", "-o", str(tmp_path / "m.jsonl"))
    assert result.returncode != 0
    assert "class 'a b' contains ' '" in result.stderr and "Traceback" not in result.stderr


def test_trace_gen_with_a_good_class_reads_back(tmp_path):
    out = tmp_path / "t.jsonl"
    result = tailmark("trace", "gen", "fixed", "--rate", "10", "--count", "3", "--class", "chat", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert [r.traffic_class for r in read_records(out)] == ["chat"] * 3
