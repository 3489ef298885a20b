"""Overload: bounded queues reject the excess at once, admitted requests stay within queue bound plus
compute; ``--workers N`` spreads connections over N processes sharing one port."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.repository import identity_config, sleep_config
from support.serve import ServerProcess
from tailmark.server.default_repository import write_model


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("overload")
    write_model(root, "sleep", sleep_config(100, instances=1))
    write_model(root, "identity", identity_config())
    return root


def _burst(target: str, n: int) -> list[tuple[float, object]]:
    """n concurrent requests to the 100 ms sleep model: (latency s, output or error) each."""
    client = grpcclient.InferenceServerClient(target)
    assert client.is_server_live()
    results: list = [None] * n

    def one(i: int) -> None:
        tensor = grpcclient.InferInput("INPUT0", [2], "FP32")
        tensor.set_data_from_numpy(np.full(2, i, dtype=np.float32))
        started = time.perf_counter()
        try:
            out = client.infer("sleep", [tensor]).as_numpy("OUTPUT0")
        except InferenceServerException as exc:
            out = exc
        results[i] = (time.perf_counter() - started, out)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.parametrize("stack", ["sync", "aio", "h2"])
def test_max_queue_size_rejects_the_excess_and_bounds_admitted_latency(repository, stack):
    # capacity: one request per 100 ms; 10 at once is 5x what a 2-deep queue plus the instance can hold
    args = ("--grpc-stack", stack, "--max-queue-size", "2", "--sync-threads", "16")
    with ServerProcess(repository, *args) as process:
        results = _burst(process.target, 10)
    admitted = [t for t, out in results if isinstance(out, np.ndarray)]
    rejected = [(t, out) for t, out in results if not isinstance(out, np.ndarray)]
    assert 3 <= len(admitted) <= 4  # the running one, two queued (and one more if the first finished early)
    assert all(out.status() == "StatusCode.RESOURCE_EXHAUSTED" for _, out in rejected)
    # at once, not after waiting: most well inside one service time, and every one before the queue drained
    # (one rejection took 0.29 s once on a busy 2-core box: a late thread, not a wait)
    waits = sorted(t for t, _ in rejected)
    assert waits[len(waits) // 2] < 0.1 and waits[-1] < max(admitted), (waits, admitted)
    assert max(admitted) < 3 * 0.1 + 0.25  # queue bound (2) plus its own execution, plus slack


def test_max_concurrent_rpcs_refuses_rpcs_beyond_the_limit(repository):
    with ServerProcess(repository, "--max-concurrent-rpcs", "3", "--sync-threads", "16") as process:
        results = _burst(process.target, 8)
    rejected = [out for _, out in results if not isinstance(out, np.ndarray)]
    assert len(rejected) >= 4
    assert all(out.status() == "StatusCode.RESOURCE_EXHAUSTED" for out in rejected)


def test_workers_share_one_port(repository):
    process = ServerProcess(repository, "--workers", "2")
    try:
        assert any("2 workers" in line for line in process.lines)
        clients = [
            grpcclient.InferenceServerClient(process.target, channel_args=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(16)
        ]
        tensor = grpcclient.InferInput("INPUT0", [2], "FP32")
        tensor.set_data_from_numpy(np.ones(2, dtype=np.float32))
        for client in clients:
            client.infer("identity", [tensor])
        # each worker counts only its own requests: no connection sees all 16, and the totals add up
        counts = [int(c.get_inference_statistics("identity").model_stats[0].inference_count) for c in clients]
        assert max(counts) < 16
        assert {16 - c for c in counts} <= set(counts) | {8}
        for client in clients:
            client.close()
        assert process.terminate() == 0
        assert any("stopped" in line for line in process.lines)
    finally:
        process.terminate()
