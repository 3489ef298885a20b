"""``tailmark sweep`` against a server of known capacity: throughput rises, then flattens at instances /
service time, the knee is where queueing starts, and the curve's files parse."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from support.repository import sleep_config
from support.runcli import tailmark
from support.serve import ServerProcess
from tailmark.client.sweep import CSV_COLUMNS, Step, knee, parse_values, step_of, stop_reason
from tailmark.server.default_repository import write_model

QUICK = ("--duration", "2", "--warmup", "0.5", "--min-queries", "20", "--no-progress")


@pytest.fixture(scope="module")
def two_instances(tmp_path_factory):
    root = tmp_path_factory.mktemp("sleep-repo")
    write_model(root, "sleep", sleep_config(20, instances=2))  # capacity 2 / 20 ms = 100/s
    with ServerProcess(root) as process:
        yield process


def test_concurrency_sweep_finds_the_capacity_and_the_knee(two_instances, tmp_path):
    out = tmp_path / "sweep"
    run = tailmark(
        "sweep", "--target", two_instances.target, "--model", "sleep", "--concurrency", "1,2,4,8",
        "--knee-factor", "1.5", *QUICK, "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with (out / "curve.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [int(r["concurrency"]) for r in rows] == [1, 2, 4, 8]
    rates = [float(r["achieved_qps"]) for r in rows]
    # rising while instances are free (one in flight: 1 / 21 ms, less any time the client itself takes between
    # requests: 32/s was seen with the 2 cores shared by other test runs), then flat at the capacity
    assert 25.0 <= rates[0] <= 50.0 and rates[1] >= 1.6 * rates[0], rates
    assert all(88.0 <= rate <= 101.0 for rate in rates[2:]), rates  # flat at 2 instances / 20 ms
    assert float(rows[3]["p50_ms"]) >= 75.0  # 8 in flight on 2 instances: each waits for 3 ahead of it
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["complete"] and doc["stopped"] is None and doc["kind"] == "concurrency" and len(doc["steps"]) == 4
    assert doc["knee"]["step"] in (3, 4), doc["knee"]  # queueing starts once 2 instances are busy
    assert 85.0 <= doc["knee"]["usable_qps"] <= 101.0
    for r in rows:  # every step is a real run with its own results and verdict
        step = json.loads((out / r["run_dir"] / "results.json").read_text())
        assert step["scenarios"][0]["settings"]["latency_from"] == "sent"
        assert r["result"] == step["scenarios"][0]["classes"]["all"]["verdict"]["result"]
    assert "knee: step" in run.stdout and "<- knee" in run.stdout
    pytest.importorskip("matplotlib")
    assert (out / "curve.png").stat().st_size > 1000


def test_rate_sweep_offers_each_rate(two_instances, tmp_path):
    out = tmp_path / "sweep"
    run = tailmark(
        "sweep", "--target", two_instances.target, "--model", "sleep", "--rates", "20:40:20", "--no-calibration",
        *QUICK, "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert [s["target_qps"] for s in doc["steps"]] == [20.0, 40.0]
    assert all(s["scenario"] == "poisson" and s["concurrency"] is None for s in doc["steps"])
    for s in doc["steps"]:
        assert 0.6 * s["target_qps"] <= s["achieved_qps"] <= 1.5 * s["target_qps"]  # Poisson over 2 s
        assert 20.0 <= s["p50_ms"] <= 30.0  # far below capacity: the service time


def test_sweep_refusals():
    run = tailmark("sweep", "--target", "127.0.0.1:1", "--model", "m", "--rates", "10", "--target-qps", "5")
    assert run.returncode == 2 and "--rates" in run.stderr
    run = tailmark("sweep", "--target", "127.0.0.1:1", "--model", "m", "--rates", "0,10")
    assert run.returncode == 2 and "values > 0" in run.stderr


def test_without_a_target_the_sweep_starts_the_built_in_server_once(tmp_path):
    out = tmp_path / "sweep"
    run = tailmark("sweep", "--concurrency", "1,2", "--no-calibration", *QUICK, "--duration", "1", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("starting the built-in server") == 1
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["complete"] and [s["concurrency"] for s in doc["steps"]] == [1, 2]
    targets = [
        json.loads((out / s["run_dir"] / "results.json").read_text())["environment"]["target"] for s in doc["steps"]
    ]
    assert {t["model"] for t in targets} == {"resnet"}  # the built-in server's default model
    assert len({t["address"] for t in targets}) == 1  # one server for every step
    for step in doc["steps"]:  # each step says the server was built in, and how it was pinned
        environment = json.loads((out / step["run_dir"] / "results.json").read_text())["environment"]
        assert environment["target"]["embedded"] is True and step["server"].startswith("built-in, ")
        if environment["pinning"]:
            assert f"client CPUs {environment['pinning']['client_cpus']}" in step["server"]
    page = (out / "report.html").read_text(encoding="utf-8")  # the curve and the steps on one page
    assert page.count("<tr><td>") == 2 and all(f"<a href='{s['run_dir']}/report.html'>" in page for s in doc["steps"])
    assert "<p>server: built-in, " in page
    (out / "report.html").unlink()
    again = tailmark("report", str(out))  # a sweep's directory: every step's page, then the curve's
    assert again.returncode == 0, again.stderr
    assert "knee" in again.stdout and (out / "report.html").exists()
    assert "the sweep's latency-throughput curve" in (out / doc["steps"][0]["run_dir"] / "report.html").read_text()


def test_parse_values_and_the_knee_rule():
    assert parse_values("400,100,200,100", float) == [100.0, 200.0, 400.0]
    assert parse_values("100:500:100", float) == [100.0, 200.0, 300.0, 400.0, 500.0]
    assert parse_values("0.1:0.3:0.1", float) == pytest.approx([0.1, 0.2, 0.3])
    assert parse_values("1:8:3", int) == [1, 4, 7]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_values("5:1:1", int)

    def step(n: int, qps: float, p99: float) -> Step:
        return Step(n, "poisson", qps, None, qps, p99, p99, p99, p99, 100, 0, "VALID", None, "")

    steps = [step(1, 100, 5.0), step(2, 200, 6.0), step(3, 300, 9.9), step(4, 400, 10.1), step(5, 410, 50.0)]
    found = knee(steps, 2.0)
    assert (found.step, found.baseline_p99_ms, found.usable_qps) == (4, 5.0, 300)
    assert knee(steps[:3], 2.0).step is None and knee(steps[:3], 2.0).usable_qps == 300
    assert knee([], 2.0).step is None


def test_sweep_copies_runs_flags_and_leaves_run_as_it_was():
    from tailmark.cli import build_parser

    parser = build_parser()
    run = parser.parse_args(["run", "--scenario", "concurrency", "--concurrency", "4", "--out", "r", "--seed", "3"])
    assert (run.scenario, run.concurrency, str(run.out), run.seed) == (["concurrency"], 4, "r", 3)
    sweep = parser.parse_args(["sweep", "--target", "h:1", "--model", "m", "--concurrency", "8,1,2", "--seed", "3"])
    assert sweep.concurrency_levels == [1, 2, 8]  # parsed by the sweep's own type
    assert sweep.concurrency is None and sweep.seed == 3 and sweep.handler.__name__ == "sweep_command"


def test_a_repeated_step_is_the_median_of_its_repeats():
    def entry(rate: float, p99: float, result: str, cause: str | None) -> dict:
        lat = {"p50": p99 / 2, "p90": p99 / 1.5, "p99": p99, "p99_9": p99 * 2}
        verdict = {"result": result, "cause": cause}
        return {
            "scenario": "concurrency",
            "settings": {"effective": {"target_qps": 0.0, "concurrency": 4}},
            "classes": {"all": {"achieved_rate_qps": rate, "latency_ms": {"intended_to_done": lat},
                                "query_count": 100, "error_count": 0, "verdict": verdict}},
        }  # fmt: skip

    doc = {"scenarios": [entry(100, 10, "VALID", None), entry(90, 30, "INVALID", "host"), entry(95, 12, "VALID", None)]}
    step = step_of(doc, 2, Path("step-02"))
    assert (step.achieved_qps, step.p99_ms, step.p99_9_ms, step.queries, step.repeats) == (95, 12, 24, 300, 3)
    assert (step.result, step.cause, step.concurrency, step.target_qps) == ("INVALID", "host", 4, None)


def test_a_client_bound_step_stops_the_sweep():
    def step(cause: str | None) -> Step:
        result = "INVALID" if cause else "VALID"
        return Step(3, "poisson", 900.0, None, 700.0, 1.0, 2.0, 3.0, 4.0, 100, 0, result, cause, "step-03")

    assert stop_reason(step(None)) == "" and stop_reason(step("host")) == "" and stop_reason(step("endpoint")) == ""
    assert "step 3: the client limited the result" in stop_reason(step("client"))
