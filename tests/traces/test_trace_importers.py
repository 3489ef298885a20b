"""Importers on small fixtures written here (shared timestamps, no final newline), and the real Azure file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tailmark.traces import importers as im
from tailmark.traces.format import TraceFormatError
from tailmark.traces.stats import measure


def _real_traces() -> Path:
    """Where the real (large, not shipped) traces live: $TAILMARK_REAL_TRACES, else shared/traces-real beside
    the checkout (present on the project's own machines, absent in a plain clone)."""
    if "TAILMARK_REAL_TRACES" in os.environ:
        return Path(os.environ["TAILMARK_REAL_TRACES"])
    return Path(__file__).resolve().parents[3] / "shared" / "traces-real"


REAL_AZURE = _real_traces() / "azure_llm_2023_conv.csv"
MS = 1_000_000


def test_parse_datetime_keeps_100ns_digits_and_zones():
    base = im.parse_datetime_ns("2023-11-16 18:15:46")
    assert im.parse_datetime_ns("2023-11-16 18:15:46.6805900") - base == 680_590_000
    assert im.parse_datetime_ns("2023-11-16T18:15:46.0000001Z") - base == 100
    zoned = im.parse_datetime_ns("2024-05-10 00:00:00.0097360+00:00")
    assert zoned == im.parse_datetime_ns("2024-05-10 00:00:00.009736")
    assert im.parse_datetime_ns("2024-05-10 02:00:00+02:00") == im.parse_datetime_ns("2024-05-10 00:00:00")
    with pytest.raises(ValueError, match="not YYYY-MM-DD"):
        im.parse_datetime_ns("16/11/2023 18:15")


def test_azure_llm_shared_timestamps_and_no_final_newline(write):
    path = write(
        "az.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:46.6805900,12,3\n"
        "2023-11-16 18:15:50.9951690,396,109",
    )
    recs = list(im.azure_llm(path))
    assert [r.offset_ns for r in recs] == [0, 0, 4_314_579_000]
    assert [(r.input_tokens, r.output_tokens) for r in recs] == [(374, 44), (12, 3), (396, 109)]


def test_azure_llm_2024_style_with_zone(write):
    path = write(
        "az24.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        "2024-05-10 00:00:00.0097360+00:00,4808,10\r\n2024-05-10 00:00:00.0129340+00:00,3180,8\r\n",
    )
    assert [r.offset_ns for r in im.azure_llm(path)] == [0, 3_198_000]


def test_azure_llm_errors_name_the_line(write):
    path = write(
        "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,2\n2023-11-16 18:15:47,x,2\n"
    )
    with pytest.raises(TraceFormatError, match=r"az\.csv:3: ContextTokens 'x' is not an integer"):
        list(im.azure_llm(path))
    path = write("hdr.csv", "time,ContextTokens\n")
    with pytest.raises(TraceFormatError, match=r"hdr\.csv:1: header lacks column\(s\) TIMESTAMP, GeneratedTokens"):
        list(im.azure_llm(path))


def test_unsorted_is_an_error_unless_sort(write):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47,1,1\n2023-11-16 18:15:46,2,2\n"
    path = write("u.csv", text)
    with pytest.raises(TraceFormatError, match=r"u\.csv:3: timestamp is 1000\.000 ms earlier.*--sort"):
        list(im.azure_llm(path))
    recs = list(im.azure_llm(path, sort=True))
    assert [(r.offset_ns, r.input_tokens) for r in recs] == [(0, 2), (1_000_000_000, 1)]


def test_skip_bad_counts_rows(write):
    path = write(
        "s.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\nbad,1,1\n"
        "2023-11-16 18:15:47,1\n2023-11-16 18:15:48,1,1",
    )
    imported = im.azure_llm(path, skip_bad=True)
    assert len(list(imported)) == 2
    assert imported.skipped == 2
    assert imported.skipped_lines == [3, 4]


def test_empty_import_is_an_error(write):
    path = write("e.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n")
    with pytest.raises(TraceFormatError, match="no arrivals"):
        list(im.azure_llm(path))


@pytest.mark.skipif(
    not REAL_AZURE.is_file(),
    reason=f"real Azure trace not found at {REAL_AZURE} (set TAILMARK_REAL_TRACES to the folder that holds it)",
)
def test_real_azure_conversation_trace():
    recs = list(im.azure_llm(REAL_AZURE))
    assert len(recs) == 19_366
    assert (recs[0].input_tokens, recs[0].output_tokens) == (374, 44)
    assert (recs[-1].input_tokens, recs[-1].output_tokens) == (197, 183)  # the row without a final newline
    stats = measure(recs)
    assert stats.mean_rate_qps == pytest.approx(5.53, abs=0.01)
    assert stats.gap_cv == pytest.approx(1.09, abs=0.01)


def test_mooncake_jsonl(write):
    lines = [
        {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47]},
        {"timestamp": 27482, "input_length": 10, "output_length": 1, "hash_ids": []},
        {"timestamp": 30535.5, "input_length": 6472, "output_length": 26, "hash_ids": [46]},
    ]
    path = write("m.jsonl", "\n".join(json.dumps(x) for x in lines))
    recs = list(im.mooncake(path))
    assert [r.offset_ns for r in recs] == [0, 0, 3_053_500_000]
    assert [r.input_tokens for r in recs] == [6955, 10, 6472]
    path = write("bad.jsonl", '{"timestamp": 1}\n{"input_length": 3}\n')
    with pytest.raises(TraceFormatError, match=r"bad\.jsonl:2: .*timestamp"):
        list(im.mooncake(path))


def test_burstgpt_with_classes(write):
    path = write(
        "b.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n5,GPT-4,1087,0,1087,API log\n"
        "6.25,ChatGPT,417,30,447,Conversation log",
    )
    recs = list(im.burstgpt(path, class_by="model"))
    assert [(r.offset_ns, r.traffic_class, r.output_tokens) for r in recs] == [
        (0, "ChatGPT", 18),
        (0, "GPT-4", 0),
        (1_250_000_000, "ChatGPT", 30),
    ]
    # BurstGPT's log types carry a space, which results cannot key by: "API log" becomes "API_log"
    assert [r.traffic_class for r in im.burstgpt(path, class_by="log-type")] == [
        "Conversation_log",
        "API_log",
        "Conversation_log",
    ]
    assert {r.traffic_class for r in im.burstgpt(path)} == {"default"}


def test_burstgpt_log_type_import_reads_back(write, tmp_path):
    """The imported trace must pass the reader's class check (before, "API log" was written and then refused)."""
    from tailmark.traces.reader import read_records
    from tailmark.traces.writer import write_trace

    path = write(
        "b.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n5,GPT-4,1087,0,1087,API log\n",
    )
    out = tmp_path / "b.jsonl"
    write_trace(out, im.burstgpt(path, class_by="log-type"))
    assert [r.traffic_class for r in read_records(out)] == ["Conversation_log", "API_log"]


@pytest.mark.parametrize(
    ("value", "name"),
    [("API log", "API_log"), ("  a ,\t/ b  ", "a_b"), ("x/y,z", "x_y_z"), ("GPT-4", "GPT-4"), ("größe", "größe")],
)
def test_class_from_data_makes_one_underscore_per_run(value, name):
    assert im.class_from_data(value) == name


def test_a_data_class_that_stays_invalid_is_a_malformed_row(write):
    header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    path = write("b.csv", header + "5,ChatGPT,1,1,2,API log\n6,all,1,1,2,API log\n")
    with pytest.raises(TraceFormatError, match=r"b\.csv:3: class 'all' is reserved"):
        list(im.burstgpt(path, class_by="model"))
    imported = im.burstgpt(path, class_by="model", skip_bad=True)
    assert [r.traffic_class for r in imported] == ["ChatGPT"] and imported.skipped_lines == [3]


def test_pa_intervals_follow_perf_analyzer_and_loop_seamlessly(write):
    from tailmark.traces.transforms import loop

    path = write("iv.txt", "1000\n2500\n500")
    recs = list(im.pa_intervals(path))
    assert [r.offset_ns // 1000 for r in recs] == [1000, 3500, 4000]
    looped = [r.offset_ns // 1000 for r in loop(lambda: im.pa_intervals(path), 2)]
    assert looped == [1000, 3500, 4000, 5000, 7500, 8000]
    bad = write("bad.txt", "1000\n-5\n")
    with pytest.raises(TraceFormatError, match=r"bad\.txt:2: interval"):
        list(im.pa_intervals(bad))


def test_pa_fixed_schedule_json(write):
    doc = {
        "data": [
            {"INPUT0": [1, 2], "timestamp": [0]},
            {"INPUT0": [3], "timestamp": [12.5]},
            {"INPUT0": [4], "timestamp": 12.5},
        ]
    }
    path = write("fs.json", json.dumps(doc, indent=1))
    assert [r.offset_ns for r in im.pa_schedule(path)] == [0, 12_500_000, 12_500_000]
    path = write("bad.json", json.dumps({"data": [{"timestamp": [1]}, {"INPUT0": [1]}]}))
    with pytest.raises(TraceFormatError, match=r"data\[1\]: no \"timestamp\""):
        list(im.pa_schedule(path))
    path = write("broken.json", '{"data": [\n{"timestamp": [1]},\n}')
    with pytest.raises(TraceFormatError, match=r"broken\.json:3: invalid JSON"):
        list(im.pa_schedule(path))


AZF = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no1,a1,f1,http,2,0,1\no1,a1,f2,timer,1,0,0\no2,a2,f3,http,1,0,3"


def test_azure_functions_expands_minute_counts_uniformly(write):
    path = write("f.csv", AZF)
    recs = list(im.azure_functions(path))
    secs = [r.offset_ns / 1e9 for r in recs]
    assert len(recs) == 8
    assert secs[:4] == [7.5, 22.5, 37.5, 52.5]  # 4 in minute 1, centred in 15-s slots
    assert secs[4:] == [127.5, 142.5, 157.5, 172.5]  # 4 in minute 3 (minute 2 is quiet)
    by_trigger = list(im.azure_functions(path, class_by="trigger"))
    assert sum(r.traffic_class == "timer" for r in by_trigger) == 1
    spaced = write("g.csv", AZF.replace("timer", "event hub"))
    assert {r.traffic_class for r in im.azure_functions(spaced, class_by="trigger")} == {"http", "event_hub"}
    blank = write("e.csv", AZF.replace("timer", " "))
    with pytest.raises(TraceFormatError, match=r"e\.csv:3: class '' is not a non-empty string"):
        list(im.azure_functions(blank, class_by="trigger"))
    only_f3 = list(im.azure_functions(path, function="f3"))
    assert len(only_f3) == 4


def test_azure_functions_poisson_spread_is_seeded_and_inside_each_minute(write):
    path = write("f.csv", AZF)
    a = [r.offset_ns for r in im.azure_functions(path, spread="poisson", seed=3)]
    assert a == [r.offset_ns for r in im.azure_functions(path, spread="poisson", seed=3)]
    assert sum(t < 60e9 for t in a) == 4 and sum(t >= 120e9 for t in a) == 4
    bad = write("bad.csv", "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,x\n")
    with pytest.raises(TraceFormatError, match=r"bad\.csv:2: minute 2 count 'x'"):
        list(im.azure_functions(bad))
