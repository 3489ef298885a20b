"""The client's numbers against models with known latencies: shown correct, not assumed."""

from __future__ import annotations

import pytest

from support.repository import sleep_config
from support.runcli import latency, results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.server.default_repository import write_model


@pytest.fixture(scope="module")
def sleep_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sleep-repo")
    write_model(root, "sleep20", sleep_config(20, instances=8))  # no queueing at 20/s
    write_model(root, "null", 'backend: "null"\nmax_batch_size: 0\n'
                'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
                'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')  # fmt: skip
    # one instance, 5 ms, and execution 150 stalls for a second
    stall = 'parameters { key: "stall_ms" value: { string_value: "1000" } }\n'
    stall += 'parameters { key: "stall_after_requests" value: { string_value: "150" } }'
    write_model(root, "stall", sleep_config(5, instances=1, extra=stall))
    with ServerProcess(root) as process:
        yield process


def test_fixed_20ms_service_time_is_measured_as_20ms(sleep_server, tmp_path):
    """p50 of intended→done is the 20 ms service time plus the transport's own floor, within 2 ms.

    The floor is measured in the same run: the `null` model paced like the sleep runs (one request
    every ~22 ms). On an idle VM that floor is ~2 ms (vCPU wake-ups), against ~0.9 ms back to back.
    """
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", sleep_server.target, "--model", "sleep20", "--scenario", "single-stream",
        "--scenario", "poisson", "--target-qps", "20", "--duration", "3", "--warmup", "0.5",
        "--min-queries", "40", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    floor_out = tmp_path / "floor"
    floor = tailmark(
        "run", "--target", sleep_server.target, "--model", "null", "--scenario", "fixed-interval",
        "--target-qps", "45", "--duration", "3", "--warmup", "0.5", "--out", str(floor_out), "--no-progress",
    )  # fmt: skip
    assert floor.returncode == 0, floor.stderr
    floor_ms = latency(results(floor_out), "fixed-interval")["p50"]
    assert floor_ms < 5.0, f"the loopback floor itself is {floor_ms} ms"
    doc = results(out)
    for name in ("single-stream", "poisson"):
        p50 = latency(doc, name)["p50"]
        assert abs(p50 - floor_ms - 20.0) <= 2.0, f"{name}: p50 {p50} ms, floor {floor_ms} ms"
        assert latency(doc, name)["min"] >= 19.9  # a 20 ms model can never answer faster
    assert scenario(doc, "single-stream")["classes"]["all"]["query_count"] >= 40


def test_coordinated_omission_is_shown_and_handled(sleep_server, tmp_path):
    """A 1 s stall under a 1-request in-flight cap: the backlog it causes appears in intended→done,
    while sent→done (what a closed-loop tool reports) hides it; the verdict blames the endpoint, not the client."""
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", sleep_server.target, "--model", "stall", "--scenario", "poisson", "--target-qps", "50",
        "--duration", "6", "--warmup", "0", "--max-outstanding", "1", "--latency-bound-ms", "100",
        "--no-calibration",  # its warm-up burst would meet the model's one stall before the scenario does
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    intended = latency(doc, "poisson", "intended_to_done")
    sent = latency(doc, "poisson", "sent_to_done")
    lag = latency(doc, "poisson", "send_lag")
    assert intended["p99"] >= 500.0, intended  # the stall and its queue are in the headline
    assert intended["max"] >= 950.0
    assert sent["p99"] <= 100.0, sent  # hidden from sent→done: the queue was in the client
    assert sent["max"] >= 950.0  # (the stalled request itself is there, once)
    assert lag["p99"] >= 400.0  # and the client says it could not send on time
    verdict = scenario(doc, "poisson")["classes"]["all"]["verdict"]
    assert verdict["result"] == "INVALID" and verdict["cause"] == "endpoint"
    assert any(c["name"] == "latency_bound" and not c["passed"] for c in verdict["checks"])
    assert all(c["passed"] for c in verdict["checks"] if c["name"] == "client_bound")
    assert scenario(doc, "poisson")["evidence"]["held_by_cap"] > 0
    assert any("waited for an in-flight slot" in w for w in scenario(doc, "poisson")["warnings"])
