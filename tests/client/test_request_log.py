"""The per-request log carries each request's size, and a failed request's intended and sent instants, from every
loop of the dispatcher (open, closed, concurrency); the recorder without a log buffers only the three stamps."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tailmark.client import request_log
from tailmark.client.dispatcher import Dispatcher, Stop
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.schedule import poisson
from tailmark.client.transport import MockTransport, ModelInfo, RequestFailed, TensorInfo

INFO = ModelInfo(
    name="m", version="1", platform="p", inputs=(TensorInfo("INPUT0", "FP32", (4,)),), outputs=(), max_batch_size=0
)
STOP = Stop(min_duration_ns=50_000_000, min_queries=20)


def test_recorder_logs_sizes_and_failed_instants(tmp_path) -> None:
    path = tmp_path / request_log.FILE_NAME
    t0 = 5_000_000_000
    recorder = Recorder(start_ns=t0, request_log_path=path)
    key = ("server", "default")
    recorder.record(key, t0 + 10, t0 + 15, t0 + 900, 4160)
    recorder.record_error(key, "UNAVAILABLE", t0 + 20, t0 + 21, 96)
    recorder.record_error(key, "INTERNAL")  # a caller that knows nothing: nulls and 0 bytes
    recorder.close()
    by_status = {r["status"]: r for r in request_log.read(path)}
    assert by_status.keys() == {"OK", "UNAVAILABLE", "INTERNAL"}
    seen = {status: (r["intended_ns"], r["sent_ns"], r["request_bytes"]) for status, r in by_status.items()}
    assert seen == {"OK": (10, 15, 4160), "UNAVAILABLE": (20, 21, 96), "INTERNAL": (None, None, 0)}


def test_without_a_log_the_buffer_holds_three_stamps_per_request() -> None:
    recorder = Recorder()
    key = ("server", "default")
    recorder.record(key, 1, 2, 3, 4160)
    assert recorder._pending[key] == [1, 2, 3]
    recorder.flush()
    assert recorder.histogram(key).get_total_count() == 1


def _failing_every_third():
    count = itertools.count()

    async def handler(payload: bytes) -> bytes:
        if next(count) % 3 == 2:
            raise RequestFailed("UNAVAILABLE", "down")
        return b""

    return handler


async def _run(loop: str, recorder: Recorder) -> Dispatcher:
    pool = random_pool(INFO, count=4, seed=0)
    dispatcher = Dispatcher(
        transport=MockTransport(INFO, _failing_every_third()), pool=pool, recorder=recorder, scenario="s", sample_seed=0
    )
    if loop == "open":
        await dispatcher.open_loop(poisson(1000.0, seed=1), warmup_ns=0, stop=STOP, max_outstanding=0)
        await dispatcher.drain(timeout_s=5)
    elif loop == "closed":
        await dispatcher.closed_loop(samples_per_query=1, warmup_ns=0, stop=STOP, traffic_class="default")
    else:
        await dispatcher.concurrent_loop(
            concurrency=2, think_time_ns=0, rate_cap_qps=0, batch_size=1, warmup_ns=0, stop=STOP,
            traffic_class="default",
        )  # fmt: skip
    return dispatcher


@pytest.mark.parametrize("loop", ["open", "closed", "concurrent"])
def test_dispatcher_passes_sizes_and_a_failure_s_instants(loop, tmp_path) -> None:
    path = tmp_path / request_log.FILE_NAME
    recorder = Recorder(request_log_path=path)
    dispatcher = asyncio.run(_run(loop, recorder))
    recorder.close()
    lines = request_log.read(path)
    failed = [r for r in lines if r["status"] != "OK"]
    assert len(lines) == dispatcher.completed + dispatcher.failed and failed
    size = len(random_pool(INFO, count=4, seed=0).payload(0, 1))
    assert {r["request_bytes"] for r in lines} == {size}
    for r in failed:
        assert r["status"] == "UNAVAILABLE"
        assert r["intended_ns"] is not None and r["sent_ns"] is not None
        assert 0 <= r["intended_ns"] <= r["sent_ns"] <= r["done_ns"]
