"""Trace replay through ``tailmark run``: traffic classes keep separate statistics, deadlines are enforced."""

from __future__ import annotations

from support.runcli import results, scenario, tailmark
from tailmark.traces.arrival import Arrival
from tailmark.traces.writer import write_trace


def test_classes_and_deadlines_from_a_trace(server, tmp_path):
    fast = [Arrival(offset_ns=i * 10_000_000, traffic_class="chat") for i in range(100)]
    # the sleep model takes 50 ms: a 10 ms deadline can never be met
    slow = [
        Arrival(offset_ns=5_000_000 + i * 20_000_000, traffic_class="batch", deadline_ns=10_000_000) for i in range(50)
    ]
    trace = tmp_path / "two.jsonl"
    write_trace(trace, sorted(fast + slow, key=lambda a: a.offset_ns), time_unit="ms")
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "sleep", "--scenario", "trace", "--trace", str(trace),
        "--warmup", "0", "--out", str(out), "--no-progress", "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    classes = scenario(results(out), "trace")["classes"]
    assert set(classes) == {"all", "chat", "batch"}
    assert classes["chat"]["ok_count"] == 100 and classes["chat"]["error_count"] == 0
    assert classes["batch"]["errors"] == {"DEADLINE_EXCEEDED": 50}
    assert classes["all"]["query_count"] == 150
    assert classes["chat"]["latency_ms"]["intended_to_done"]["p50"] >= 50.0  # the sleep model's 50 ms
    assert "chat" in run.stdout and "batch" in run.stdout
