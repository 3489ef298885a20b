"""``tailmark run`` end to end: the built-in default, the run directory, report, merge, YAML and data files."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
from hdrh.log import HistogramLogReader

from support.runcli import results, scenario, tailmark

ALL_SIX = ["single-stream", "multi-stream", "server", "offline", "fixed-interval", "trace"]
BUILT_IN = [*ALL_SIX, "concurrency"]  # the six against ResNet, then tiny-lm's tokens over the OpenAI routes


def test_builtin_default_runs_every_scenario_and_writes_the_run_directory(tmp_path):
    """The README's first command, shortened: no --target starts and stops its own server."""
    out = tmp_path / "run"
    run = tailmark(
        "run", "--duration", "1", "--warmup", "0.2", "--min-queries", "20", "--max-duration", "2",
        "--out", str(out), "--no-progress", timeout_s=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    assert doc["complete"] is True and doc["interrupted"] is None
    assert [s["scenario"] for s in doc["scenarios"]] == BUILT_IN
    assert doc["environment"]["target"]["embedded"] is True
    generative = scenario(doc, "concurrency")
    assert (generative["settings"]["effective"]["transport"], generative["settings"]["effective"]["model"]) == (
        "openai", "tiny-lm")  # fmt: skip
    tokens = generative["classes"]["all"]["tokens"]
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == 16  # the LM's tokens: bytes
    assert 0 < tokens["latency_ms"]["itl"]["count"] <= 15 * tokens["requests"]  # a chunk may carry several bytes
    _assert_blame_follows_the_evidence(doc)
    for entry in doc["scenarios"]:
        everything = entry["classes"]["all"]
        assert everything["ok_count"] > 0, entry["scenario"]
        assert everything["error_count"] == 0, (entry["scenario"], everything["errors"])
        assert everything["verdict"]["result"] in ("VALID", "INVALID")
        scraped = entry["server_metrics"]  # the built-in server's /metrics, scraped without being asked
        success = [f for f in scraped["series"] if f["name"] == "nv_inference_request_success"]
        assert scraped["scrapes"] >= 2 and not scraped["failed_scrapes"], scraped
        assert sum(f["increase"] for f in success) >= everything["ok_count"]  # warm-up requests counted too
    assert (out / "metrics.json").exists()
    assert (
        scenario(doc, "multi-stream")["classes"]["all"]["sample_count"]
        == 8 * scenario(doc, "multi-stream")["classes"]["all"]["query_count"]
    )
    for name in BUILT_IN:  # the console table names every scenario
        assert name in run.stdout
    assert "TTFT p50" in run.stdout  # and the generative one's token table
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["scenario"] for r in rows} == set(BUILT_IN)
    assert "<html" in (out / "report.html").read_text().lower()
    # the interval log loads with HdrHistogram's own reader, tagged scenario/class/metric
    reader = HistogramLogReader(str(out / "latency.hlog"), None)
    tags, total = set(), 0
    while (interval := reader.get_next_interval_histogram()) is not None:
        tags.add(interval.get_tag())
        if interval.get_tag() == "server/default/intended_to_done":
            total += interval.get_total_count()
    assert "server/default/intended_to_done" in tags
    assert total == scenario(doc, "server")["classes"]["all"]["ok_count"]


def test_builtin_default_over_rest(tmp_path):
    """--transport http with no --target: the built-in server also serves REST, and the client measures it."""
    out = tmp_path / "rest"
    run = tailmark(
        "run", "--transport", "http", "--scenario", "single-stream", "--duration", "1", "--warmup", "0.2",
        "--min-queries", "20", "--no-calibration", "--no-progress", "--out", str(out), timeout_s=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    assert doc["environment"]["target"]["embedded"] is True
    assert doc["environment"]["target"]["address"].startswith("http://127.0.0.1:"), doc["environment"]["target"]
    assert doc["environment"]["client_transport"] == {"kind": "http", "connections": 1, "tensors": "binary"}
    everything = scenario(doc, "single-stream")["classes"]["all"]
    assert everything["ok_count"] > 0 and everything["error_count"] == 0, everything["errors"]


def test_builtin_default_over_openai(tmp_path):
    """--transport openai with no --target or --model: the built-in server's synthetic LLM, measured in tokens."""
    out = tmp_path / "llm"
    run = tailmark(
        "run", "--transport", "openai", "--scenario", "concurrency", "--concurrency", "2", "--duration", "1",
        "--warmup", "0.2", "--min-queries", "5", "--input-tokens", "20", "--output-tokens", "4", "--ignore-eos",
        "--no-calibration", "--no-progress", "--out", str(out), timeout_s=300,
    )  # fmt: skip
    assert run.returncode in (0, 3), run.stderr  # 3: INVALID (a short run), still measured
    doc = results(out)
    assert doc["environment"]["target"]["model"] == "synth-llm"
    assert doc["environment"]["target"]["address"].startswith("http://127.0.0.1:")
    everything = scenario(doc, "concurrency")["classes"]["all"]
    assert everything["ok_count"] > 0 and everything["error_count"] == 0, everything["errors"]
    tokens = everything["tokens"]
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == 4  # --output-tokens with --ignore-eos
    assert tokens["latency_ms"]["ttft"]["p50"] >= 20.0  # never faster than the model's 20 ms prefill


def _assert_blame_follows_the_evidence(doc: dict) -> None:
    """The built-in default pins, probes and calibrates, and never blames an idle client for the host's lateness."""
    pinning = doc["environment"]["pinning"]
    if len(os.sched_getaffinity(0)) >= 2:
        assert pinning and pinning["client_cpus"] and set(pinning["server_cpus"]).isdisjoint(pinning["client_cpus"])
    calibration = doc["calibration"]
    assert calibration["null_transport"] and calibration["cpu_us_per_request"] > 0
    for entry in doc["scenarios"]:
        evidence = entry["evidence"]
        probe = evidence["host_probe"]
        assert probe["wakeups"] > 0 and probe["late_ms"]["count"] == probe["wakeups"]
        if pinning:
            assert probe["cpus"] == pinning["client_cpus"]  # the probe watches the client's own CPUs
        verdict = entry["classes"]["all"]["verdict"]
        lag_p99 = entry["classes"]["all"]["latency_ms"]["send_lag"]["p99"] or 0.0
        idle = evidence["client_cpu_pct"] is not None and evidence["client_cpu_pct"] < 50
        host_saw_it = (
            probe["late_ms"]["p99"] >= 0.5 * lag_p99 or (probe["client_wait_ms"] or 0) >= 0.02e3 * probe["window_s"]
        )
        assert not (verdict["cause"] == "client" and idle and host_saw_it and not evidence["unsent_at_end"]), entry
        if verdict["cause"] == "client":  # and a client blamed has the figures that blame it
            assert any(c["name"] == "client_bound" and not c["passed"] for c in verdict["checks"])


def test_report_and_merge_commands(tmp_path, server):
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--scenario", "poisson", "--target-qps", "200",
        "--duration", "1", "--warmup", "0", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (out / "report.html").unlink()
    shown = tailmark("report", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "poisson" in shown.stdout and (out / "report.html").exists()
    merged = tailmark("merge", str(out), str(out / "histograms.json"), "-o", str(tmp_path / "merged.json"))
    assert merged.returncode == 0, merged.stderr
    ok = scenario(results(out), "poisson")["classes"]["all"]["ok_count"]
    server_side = scenario(results(out), "poisson")["server_stats"]  # ModelStatistics over the scenario
    assert server_side["requests"] >= ok and server_side["failures"] == 0
    assert server_side["executions"] == server_side["requests"]  # identity does not batch
    assert server_side["mean_us"]["request"] > 0 and "server side" in run.stdout
    assert f"poisson/default: {2 * ok} requests" in merged.stdout
    bad = tailmark("report", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_yaml_settings_and_input_data(tmp_path, server):
    data = np.arange(5 * 4, dtype=np.int32).reshape(5, 2, 2)
    np.savez(tmp_path / "data.npz", A=data, B=np.ones((5, 3), np.float32))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"target: {server.target}\nmodel: two_inputs\n"
        "defaults: {min_duration_s: 1, warmup_s: 0, min_query_count: 10}\n"
        "scenarios:\n  - {scenario: fixed-interval, target_qps: 100}\n  - single-stream\n"
    )
    out = tmp_path / "run"
    run = tailmark("run", "--config", str(config), "--input-data", str(tmp_path / "data.npz"), "--out", str(out),
                   "--no-progress")  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    assert [s["scenario"] for s in doc["scenarios"]] == ["fixed-interval", "single-stream"]
    fixed = scenario(doc, "fixed-interval")
    assert fixed["settings"]["effective"]["target_qps"] == 100
    assert fixed["settings"]["requested"]["min_duration_s"] == 1
    assert 90 <= fixed["classes"]["all"]["achieved_rate_qps"] <= 110
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, A=data)
    bad = tailmark("run", "--config", str(config), "--input-data", str(wrong), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "no data for model inputs ['B']" in bad.stderr
    assert json.loads((out / "histograms.json").read_text())["format"].startswith("tailmark.recorder")
