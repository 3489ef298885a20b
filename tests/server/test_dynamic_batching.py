"""Dynamic batching through a real ``tailmark serve`` process, on both gRPC stacks.

The models are sleep models: one execution costs a fixed time whatever its batch size, so batching
shows up directly in the statistics and the timings.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.repository import batched_sleep_config
from support.serve import ServerProcess
from tailmark.server.default_repository import write_model

MODELS = {
    # 8 concurrent requests gather while the one instance is busy
    "batched": batched_sleep_config(30, dynamic_batching="max_queue_delay_microseconds: 5000"),
    "preferred": batched_sleep_config(
        1, dynamic_batching="preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 400000"
    ),
    "delayed": batched_sleep_config(1, dynamic_batching="max_queue_delay_microseconds: 150000"),
    "bounded": batched_sleep_config(
        400, max_batch_size=1, dynamic_batching="default_queue_policy { max_queue_size: 2 }"
    ),
    "timeouts": batched_sleep_config(
        400, max_batch_size=1, dynamic_batching="default_queue_policy { timeout_action: REJECT }"
    ),
    "prioritized": batched_sleep_config(
        150, max_batch_size=1, dynamic_batching="priority_levels: 2 default_priority_level: 2"
    ),
    "two_instances": batched_sleep_config(100, max_batch_size=4, instances=2, dynamic_batching=""),
    "bad_preferred": batched_sleep_config(1, max_batch_size=4, dynamic_batching="preferred_batch_size: [ 9 ]"),
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    for name, text in MODELS.items():
        write_model(root, name, text)
    return root


@pytest.fixture(scope="module", params=["sync", "aio", "h2"])
def server(request, repository):
    with ServerProcess(repository, "--grpc-stack", request.param, "--sync-threads", "16") as process:
        yield process


def _inputs(value: float, rows: int = 1):
    tensor = grpcclient.InferInput("INPUT0", [rows, 2], "FP32")
    tensor.set_data_from_numpy(np.full((rows, 2), value, dtype=np.float32))
    return [tensor]


def _concurrently(target: str, calls: list[dict]) -> list[tuple[float, object]]:
    """Run each call (model, value, kwargs, delay_s) in its own thread; (completion time, result or error)."""
    results: list = [None] * len(calls)
    client = grpcclient.InferenceServerClient(target)
    assert client.is_server_live()  # connect first: the timings below are the server's
    started = time.perf_counter()

    def one(index: int, call: dict) -> None:
        time.sleep(call.get("delay_s", 0))
        try:
            out = client.infer(call["model"], _inputs(call["value"]), **call.get("kwargs", {}))
            results[index] = (time.perf_counter() - started, out.as_numpy("OUTPUT0"))
        except InferenceServerException as exc:
            results[index] = (time.perf_counter() - started, exc)

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def _stats(target: str, model: str):
    with grpcclient.InferenceServerClient(target) as client:
        return client.get_inference_statistics(model, as_json=True)["model_stats"][0]


def test_concurrent_requests_form_batches_and_each_gets_its_own_rows(server):
    results = _concurrently(server.target, [{"model": "batched", "value": float(i)} for i in range(8)])
    for i, (_, out) in enumerate(results):
        assert isinstance(out, np.ndarray), out
        np.testing.assert_array_equal(out, np.full((1, 2), float(i), dtype=np.float32))
    stats = _stats(server.target, "batched")
    assert int(stats["inference_count"]) == 8
    assert int(stats["execution_count"]) < 8
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    assert max(sizes) > 1
    assert sum(size * count for size, count in sizes.items()) == 8
    assert sum(sizes.values()) == int(stats["execution_count"])
    inference = stats["inference_stats"]
    assert int(inference["success"]["count"]) == 8
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert int(inference[key]["count"]) == 8, key
    # each request is charged its batch's 30 ms execution
    assert int(inference["compute_infer"]["ns"]) >= 8 * 29_000_000


def test_a_preferred_batch_goes_without_waiting_for_the_delay(server):
    results = _concurrently(server.target, [{"model": "preferred", "value": float(i)} for i in range(4)])
    assert all(isinstance(out, np.ndarray) for _, out in results)
    assert max(t for t, _ in results) < 0.3  # the delay is 0.4 s
    stats = _stats(server.target, "preferred")
    assert [int(b["batch_size"]) for b in stats["batch_stats"]] == [4]


def test_a_lone_request_waits_the_queue_delay_and_no_longer(server):
    with grpcclient.InferenceServerClient(server.target) as client:
        client.infer("delayed", _inputs(1.0))  # warm the connection
        started = time.perf_counter()
        client.infer("delayed", _inputs(2.0))
        elapsed = time.perf_counter() - started
    assert 0.145 <= elapsed < 0.35


def test_a_full_queue_rejects_the_excess_at_once(server):
    results = _concurrently(server.target, [{"model": "bounded", "value": float(i)} for i in range(8)])
    ok = [out for _, out in results if isinstance(out, np.ndarray)]
    rejected = [(t, out) for t, out in results if not isinstance(out, np.ndarray)]
    assert len(ok) == 3  # one running, two queued
    assert all(out.status() == "StatusCode.RESOURCE_EXHAUSTED" for _, out in rejected)
    assert all("maximum queue size" in out.message() for _, out in rejected)
    # rejected at once, before even the running request's 400 ms execution ends
    assert max(t for t, _ in rejected) < min(t for t, out in results if isinstance(out, np.ndarray))


def test_a_request_timeout_rejects_while_the_instance_is_busy(server):
    results = _concurrently(
        server.target,
        [
            {"model": "timeouts", "value": 1.0},
            {"model": "timeouts", "value": 2.0, "kwargs": {"timeout": 50_000}, "delay_s": 0.05},
        ],
    )
    assert isinstance(results[0][1], np.ndarray)
    elapsed, error = results[1]
    assert isinstance(error, InferenceServerException)
    assert error.status() == "StatusCode.UNAVAILABLE" and "timeout" in error.message()
    assert elapsed < 0.3  # 50 ms delay + 50 ms timeout, well before the first request's 400 ms


def test_higher_priority_requests_overtake_queued_ones(server):
    calls = [{"model": "prioritized", "value": 0.0}]  # occupies the instance
    calls += [{"model": "prioritized", "value": 2.0, "delay_s": 0.03} for _ in range(3)]
    calls += [{"model": "prioritized", "value": 1.0, "kwargs": {"priority": 1}, "delay_s": 0.08}]
    results = _concurrently(server.target, calls)
    assert all(isinstance(out, np.ndarray) for _, out in results)
    order = [float(out[0, 0]) for _, out in sorted(results, key=lambda r: r[0])]
    assert order == [0.0, 1.0, 2.0, 2.0, 2.0]


def test_instances_execute_batches_in_parallel(server):
    started = time.perf_counter()
    results = _concurrently(server.target, [{"model": "two_instances", "value": float(i)} for i in range(8)])
    elapsed = time.perf_counter() - started
    assert all(isinstance(out, np.ndarray) for _, out in results)
    # 8 requests, batches of at most 4, two instances: two rounds of 100 ms at most, not 8 or 4 serial ones
    assert elapsed < 0.38
    assert int(_stats(server.target, "two_instances")["execution_count"]) <= 4


def test_a_bad_batching_config_makes_only_that_model_unavailable(server):
    with grpcclient.InferenceServerClient(server.target) as client:
        index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        assert index["bad_preferred"]["state"] == "UNAVAILABLE"
        assert "preferred_batch_size 9" in index["bad_preferred"]["reason"]
        assert client.is_model_ready("batched")
