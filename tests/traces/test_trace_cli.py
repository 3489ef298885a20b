"""``tailmark trace`` end to end through ``tailmark.cli.main``: files in, files out, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailmark.cli import main
from tailmark.traces.reader import read_arrivals, read_records

SAMPLES = Path(__file__).resolve().parents[2] / "traces" / "samples"


def _offsets(path) -> list[int]:
    return [a.offset_ns for a in read_arrivals(path)]


@pytest.mark.parametrize(
    "args",
    [
        ["poisson", "--rate", "100"],
        ["fixed", "--rate", "100"],
        ["gamma", "--rate", "100", "--burstiness", "0.5"],
        ["batch", "--rate", "20", "--sizes", "geometric:4"],
        ["onoff", "--rate-on", "200", "--mean-on", "1", "--mean-off", "1"],
        ["diurnal", "--rate", "100", "--amplitude", "0.5", "--period", "10"],
        ["ramp", "--start-rate", "10", "--end-rate", "100", "--ramp", "10", "--shape", "exponential"],
    ],
)
def test_gen_every_kind_is_reproducible(tmp_path, args):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.csv"
    assert main(["trace", "gen", *args, "--duration", "10", "--seed", "3", "-o", str(a)]) == 0
    assert main(["trace", "gen", *args, "--duration", "10", "--seed", "3", "-o", str(b), "--unit", "us"]) == 0
    assert _offsets(a) == _offsets(b)  # same seed, and CSV/us round-trips the same ns
    assert all(t < 10 * 10**9 for t in _offsets(a))
    header = read_records(a).header
    assert header["generator"] == args[0] and header["seed"] == 3


def test_gen_needs_a_bound_and_valid_parameters(tmp_path, capsys):
    assert main(["trace", "gen", "poisson", "--rate", "5", "-o", str(tmp_path / "x.jsonl")]) == 2
    assert "give --duration or --count" in capsys.readouterr().err
    assert (
        main(
            [
                "trace",
                "gen",
                "gamma",
                "--rate",
                "5",
                "--burstiness",
                "0",
                "--count",
                "5",
                "-o",
                str(tmp_path / "x.jsonl"),
            ]
        )
        == 2
    )
    assert "burstiness=0.0 requested; must be > 0" in capsys.readouterr().err


def test_import_transform_merge_stats_round_trip(tmp_path, capsys):
    azure = tmp_path / "az.csv"
    rows = [f"2023-11-16 18:{m:02d}:{s:02d}.5000000,{100 + s},{s}" for m in range(2) for s in range(0, 60, 2)]
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows))  # no final newline
    imported = tmp_path / "az.jsonl"
    assert (
        main(
            ["trace", "import", "--format", "azure-llm", str(azure), "-o", str(imported), "--meta", "license=CC-BY-4.0"]
        )
        == 0
    )
    assert len(_offsets(imported)) == 60
    cut = tmp_path / "cut.jsonl"
    assert main(["trace", "transform", str(imported), "--cut", "10:70", "--rate", "1.0", "-o", str(cut)]) == 0
    st_out = tmp_path / "st.json"
    main(["trace", "stats", str(cut), "--json", "--no-plot"])
    out = capsys.readouterr().out
    stats = json.loads(out[out.index("{") :])
    assert stats["count"] == 30 and stats["mean_rate_qps"] == pytest.approx(1.0)
    assert read_records(cut).header["license"] == "CC-BY-4.0"  # metadata travels with the cut
    assert read_records(cut).header["transform"].startswith("cut 10:70 s, speed x")
    merged = tmp_path / "m.jsonl"
    assert main(["trace", "merge", f"{cut}=llm", f"{imported}=raw", "-o", str(merged)]) == 0
    classes = [a.traffic_class for a in read_arrivals(merged)]
    assert classes.count("llm") == 30 and classes.count("raw") == 60
    assert main(["trace", "stats", str(merged), "--plot", str(st_out.with_suffix(".png"))]) == 0
    text = capsys.readouterr().out
    assert "arrivals        90" in text and "classes         llm 30, raw 60" in text
    assert st_out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_transform_loop_thin_speed(tmp_path):
    src = tmp_path / "f.jsonl"
    main(["trace", "gen", "fixed", "--rate", "10", "--count", "10", "-o", str(src)])
    out = tmp_path / "o.jsonl"
    assert (
        main(
            [
                "trace",
                "transform",
                str(src),
                "--loop",
                "3",
                "--speed",
                "2",
                "--deadline-ms",
                "20",
                "--class",
                "x",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    arrivals = list(read_arrivals(out))
    assert [a.offset_ns for a in arrivals] == [k * 50_000_000 for k in range(30)]
    assert {(a.traffic_class, a.deadline_ns) for a in arrivals} == {("x", 20_000_000)}
    assert main(["trace", "transform", str(src), "--thin", "0.5", "--seed", "1", "-o", str(out)]) == 0
    assert 0 < len(list(read_arrivals(out))) < 10


def test_bad_trace_is_one_line_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "tailmark-trace", "version": 1, "time_unit": "ms"}\n{"t": 1}\n{"t": oops}\n')
    assert main(["trace", "stats", str(bad), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tailmark trace: {bad}:3: invalid JSON")
    assert "\n" not in err and "Traceback" not in err
    assert main(["trace", "stats", str(bad), "--no-plot", "--skip-bad"]) == 0
    assert "skipped         1 malformed rows" in capsys.readouterr().out


def test_unsorted_import_needs_sort(tmp_path, capsys):
    src = tmp_path / "m.jsonl"
    src.write_text('{"timestamp": 10}\n{"timestamp": 5}\n')
    out = tmp_path / "o.jsonl"
    assert main(["trace", "import", "--format", "mooncake", str(src), "-o", str(out)]) == 2
    assert f"{src}:2: timestamp is 5.000 ms earlier" in capsys.readouterr().err
    assert not out.exists()
    assert main(["trace", "import", "--format", "mooncake", str(src), "-o", str(out), "--sort"]) == 0
    assert _offsets(out) == [0, 5_000_000]


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.jsonl")))
def test_shipped_samples_read_cleanly(sample, tmp_path):
    path = SAMPLES / sample
    n = sum(1 for _ in read_arrivals(path))
    assert n > 1000
    assert main(["trace", "stats", str(path), "--plot", str(tmp_path / "p.png")]) == 0


def test_azure_sample_carries_its_attribution():
    header = read_records(SAMPLES / "azure_conv_5min.jsonl").header
    assert header["license"].startswith("CC-BY-4.0")
    assert "Splitwise" in header["attribution"]
    assert "CC-BY-4.0" in (SAMPLES / "README.md").read_text()
