"""Reports: the console table against checked-in golden text, summary.csv and report.html."""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path

import pytest

from support.histograms import histogram_of
from tailmark.client import report, report_html, report_plots, report_sweep
from tailmark.client.evidence import ScenarioEvidence
from tailmark.client.host_probe import ProbeWindow
from tailmark.client.results import ALL, LATENCIES, ClassResult, RunResult, ScenarioResult, load_results
from tailmark.client.settings import Scenario, ScenarioSettings, resolve

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "console_table.txt"
MS = 1_000_000


def _class(name: str, latencies_ms: list[float], lag_ms: float, **kw) -> ClassResult:
    ns = [round(v * MS) for v in latencies_ms]
    return ClassResult(
        name, histogram_of(ns), histogram_of([v * 0.8 for v in ns]), histogram_of([lag_ms * MS] * len(ns)), **kw
    )


def _evidence() -> ScenarioEvidence:
    """A quiet host: the probe woke 60 us late at the median, 0.5 ms at p99, once 3 ms."""
    lateness = histogram_of([60_000] * 10_000 + [500_000] * 490 + [3 * MS] * 10)
    probe = ProbeWindow(
        period_us=2000, lateness=lateness, per_s=((500_000, 3 * MS),) * 21, wakeups=10_500, missed=1,
        probe_cpu_pct=0.9, wall_s=21.0, steal_pct=0.2, involuntary_switches=12, voluntary_switches=900, cpus=(1,),
    )  # fmt: skip
    return ScenarioEvidence(
        client_cpu_pct=35.0, offered=2100, unsent_at_end=0, duration_s=21.0, probe=probe,
        send_lag_p99_per_s_ms=[0.05] * 21,
    )  # fmt: skip


def _doc() -> dict:
    """Fixed inputs: a VALID server run with two classes, and an INVALID single-stream run."""
    server = resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=100, min_duration_s=5), mlperf=False)
    fast = [1 + (i % 100) / 50 for i in range(1500)]  # 1.00 .. 2.98 ms, evenly
    slow = [4 + (i % 100) / 25 for i in range(600)]  # 4.00 .. 7.96 ms
    classes = {
        "chat": _class("chat", fast, 0.05, offered_count=1500),
        "batch": _class("batch", slow, 0.05, offered_count=600, errors={"UNAVAILABLE": 0}),
    }
    single = resolve(ScenarioSettings(scenario=Scenario.SINGLE_STREAM, min_duration_s=10), mlperf=False)
    lone = {"default": _class("default", [2.5] * 50, 0.0)}
    run = RunResult(
        environment={
            "hostname": "h",
            "cpu_model": "cpu",
            "cpu_count_logical": 2,
            "python": "3.11",
            "os": "x",
            "target": {"address": "10.0.0.5:8001", "embedded": False, "model": "resnet", "version": "1"},
            "client_transport": {"kind": "h2", "connections": 2},
        },
        scenarios=[
            ScenarioResult(
                server, classes, 21.0, client_cpu_pct=35.0, throughput_per_s=[100] * 21, evidence=_evidence()
            ),
            ScenarioResult(single, lone, 4.0, client_cpu_pct=97.0),
        ],
        interrupted="SIGINT during single-stream",
        created_at="2026-01-01T00:00:00+00:00",
    )
    return json.loads(json.dumps(run.to_dict()))


def test_console_table_matches_golden() -> None:
    text = report.console_table(_doc())
    if os.environ.get("TAILMARK_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_console_table_content() -> None:
    doc = _doc()
    lines = report.console_table(doc).splitlines()
    rows = [line.split() for line in lines[2:6]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("server", "all", "VALID"),
        ("server", "batch", "VALID"),
        ("server", "chat", "VALID"),
        ("single-stream*", "all", "(client)"),  # "INVALID (client)"; its lone "default" class is not repeated
    ]
    assert rows[0][2] == "2100" and rows[0][3] == "100.0"  # 2100 queries over 21 s
    # p99 of "all" is LoadGen's sorted[floor(0.99 n)] of the merged values, to the bucket's upper edge
    values = sorted([1 + (i % 100) / 50 for i in range(1500)] + [4 + (i % 100) / 25 for i in range(600)])
    text = "\n".join(lines)
    assert float(rows[0][7]) == pytest.approx(values[2079], rel=1e-3)
    # goodput beside the rate: Server's default per-request SLO is its 10 ms bound, which every value meets
    assert rows[0][4] == "100.0" and "goodput, requests/s within their SLO: all 100.0/s of 100.0/s" in text
    assert "PARTIAL RESULT: SIGINT during single-stream" in text
    assert "  - min_duration: ran 4.000 s, minimum 10 s" in text
    assert "single-stream / all: INVALID (cause: client)" in text
    assert "client-bound (CPU saturated): client CPU 97 % (bound 90 %)" in text
    assert "server client: CPU 35 %, issued 100.0/s, 0 of 2100 unsent at the window's end" in text
    host = "server host: wake-ups late p50 0.060 / p99 0.500 / max 3.000 ms (10500 wake-ups every 2 ms on CPUs 1)"
    assert host in text


def test_csv_has_a_row_per_class_and_every_latency(tmp_path) -> None:
    doc = _doc()
    path = tmp_path / "summary.csv"
    report.write_csv(doc, path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [(r["scenario"], r["traffic_class"]) for r in rows] == [
        ("server", ALL), ("server", "batch"), ("server", "chat"), ("single-stream", ALL), ("single-stream", "default"),
    ]  # fmt: skip
    assert set(report.csv_columns()) == set(rows[0])
    for lat in LATENCIES:
        assert float(rows[1][f"{lat}_max_ms"]) >= float(rows[1][f"{lat}_p50_ms"])
    assert rows[3]["result"] == "INVALID" and "min_duration" in rows[3]["reasons"]
    chat = doc["scenarios"][0]["classes"]["chat"]
    assert float(rows[2]["intended_to_done_p99_ms"]) == chat["latency_ms"]["intended_to_done"]["p99"]


def test_html_report_is_self_contained_with_plots(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    doc = _doc()
    paths = report.write_reports(doc, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert [p.name for p in paths][:3] == ["summary.csv", "report.html", "perf_analyzer.csv"]  # then LoadGen's logs
    assert "mlperf_log_summary.txt" in [p.name for p in paths]
    # server: spectrum, send lag, time figure (from results.json: no interval log here); single-stream: spectrum, time
    # (no throughput per second: none), and no send lag (all zero); no breakdown figure without server statistics
    assert page.count("data:image/png;base64,") == 4
    assert page.count("alt='latency by percentile per traffic class'") == 2 and "alt='send lag by percentile'" in page
    assert "alt='latency over time with the host probe'" in page and "No server-side statistics" in page
    assert "<td class='t INVALID'>INVALID (client)</td>" in page and "partial result" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_html_report_without_matplotlib(monkeypatch) -> None:
    monkeypatch.setattr(report_plots, "pyplot", lambda: None)
    page = report_html.html_report(_doc())
    assert "data:image/png" not in page and "plots need matplotlib" in page and "<table>" in page
    assert "target: 10.0.0.5:8001 model resnet v1" in page and "transport: h2 x2" in page


def test_reports_render_from_a_written_results_file(tmp_path) -> None:
    doc = _doc()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert report.console_table(load_results(tmp_path / "results.json")) == report.console_table(doc)


def test_a_sent_to_done_scenario_is_marked_in_both_tables() -> None:
    doc = _doc()
    concurrency = resolve(ScenarioSettings(scenario=Scenario.CONCURRENCY, concurrency=4), mlperf=False)
    result = ScenarioResult(concurrency, {"default": _class("default", [3.0] * 40, 0.0)}, 2.0)
    doc["scenarios"].append(json.loads(json.dumps(result.to_dict())))
    assert doc["scenarios"][-1]["settings"]["latency_from"] == "sent"
    lines = report.console_table(doc).splitlines()
    marked = [line.split()[0] for line in lines[2:7] if line.split()[0].endswith("*")]  # the 5 rows
    assert marked == ["single-stream*", "concurrency*"]  # closed loops; the open-loop server rows are not marked
    assert lines[7] == report.SENT_LEGEND and "sent -> done" in report.SENT_LEGEND
    page = report_html.html_report(doc, plots=False)
    assert "<a href='#s2'>concurrency*</a></td>" in page and "<a href='#s0'>server</a></td>" in page
    assert page.count(html.escape(report.SENT_LEGEND)) == 1
    doc["scenarios"] = doc["scenarios"][:1]  # the server scenario alone: no mark, no legend
    assert report.SENT_LEGEND not in report.console_table(doc)
    assert html.escape(report.SENT_LEGEND) not in report_html.html_report(doc, plots=False)


def test_a_sweep_report_has_the_curve_and_a_row_per_step(tmp_path) -> None:
    from tailmark.client import sweep

    def step(n: int, concurrency: int, qps: float, p99: float, result: str = "VALID") -> sweep.Step:
        cause = None if result == "VALID" else "server"
        return sweep.Step(n, "concurrency", None, concurrency, qps, p99 / 2, p99 * 0.8, p99, p99 * 1.2, 100 * n, 0,
                          result, cause, f"step-{n:02d}-concurrency-{concurrency}")  # fmt: skip

    steps = [step(1, 1, 45.0, 22.0), step(2, 2, 90.0, 23.0), step(3, 4, 99.0, 60.0, "INVALID")]
    sweep.write_outputs(tmp_path, steps, sweep.knee(steps), "concurrency", complete=True)
    path = report_sweep.write_sweep_html(tmp_path)
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "report.html"
    assert page.count("<tr><td>") == 3 and "INVALID (server) ← knee" in page
    assert "<a href='step-02-concurrency-2/report.html'>" in page and "<td>90.0</td>" in page
    assert html.escape(report.SENT_LEGEND) in page and "knee: step 3" in page
    assert "http" not in page  # nothing fetched from elsewhere
    if (tmp_path / "curve.png").exists():  # with matplotlib: the plot, inlined
        assert page.count("data:image/png;base64,") == 1
    else:
        assert "needs matplotlib" in page
