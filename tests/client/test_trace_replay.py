"""Replay fidelity: the shipped Azure cut at 10x against the null model, second by second."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvloop

from tailmark.client.dispatcher import NS, Dispatcher, Stop
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.transport import GrpcTransport
from tailmark.traces.reader import read_arrivals

AZURE = Path(__file__).resolve().parents[2] / "traces" / "samples" / "azure_conv_5min.jsonl"
SPEED = 10.0  # 300 s of trace in a 30 s window


def replay(target: str):
    async def main():
        transport = await GrpcTransport.connect(target)
        try:
            pool = random_pool(await transport.model_info("null"), count=8, seed=1)
            dispatcher = Dispatcher(
                transport=transport, pool=pool, recorder=Recorder(), scenario="trace", sample_seed=1
            )
            never = Stop(min_duration_ns=2**62, min_queries=2**62)
            window = await dispatcher.open_loop(
                read_arrivals(AZURE, speed=SPEED), warmup_ns=0, stop=never, max_outstanding=0
            )
            await dispatcher.drain(30)
            dispatcher.recorder.flush()
            return window, dispatcher.recorder
        finally:
            await transport.aclose()

    return uvloop.run(main())


class WakeJitter:
    """A thread that sleeps 1 ms at a time during the replay and records how late it wakes: the host's own
    scheduling noise. When the OS alone wakes threads more than 1 ms late at p99, no client can keep a
    2 ms send-lag bound, and the test says so instead of failing."""

    def __init__(self) -> None:
        self.late_ns: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter_ns()
            time.sleep(0.001)
            self.late_ns.append(time.perf_counter_ns() - start - 1_000_000)

    def __enter__(self) -> WakeJitter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def p99_ns(self) -> float:
        return float(np.percentile(self.late_ns, 99))


def test_azure_cut_at_10x_delivers_every_second_and_sends_on_time(server):
    offsets = np.array([a.offset_ns for a in read_arrivals(AZURE, speed=SPEED)])
    expected = np.bincount(offsets // NS)
    with WakeJitter() as jitter:
        window, recorder = replay(server.target)
    sent = np.array(window.sends_per_s[: len(expected)])
    assert sent.sum() == len(offsets) == window.offered["default"]
    assert len(expected) >= 29  # a 30-second window
    detail = {"sent": sent.tolist(), "trace": expected.tolist()}
    # At ~52 arrivals/s, 1 % is half a request: a single request intended just before a second boundary and sent
    # after it (within the send-lag bound checked below) moves one count to the next second. So: every second
    # within 1 % or one request, and never more than one request behind or ahead of the trace at any boundary.
    assert (np.abs(sent - expected) <= np.maximum(0.01 * expected, 1)).all(), detail
    assert np.abs(np.cumsum(sent) - np.cumsum(expected)).max() <= 1, detail
    lag = recorder.histogram(("trace", "all"), "send_lag")
    assert lag.get_total_count() == len(offsets)
    if lag.get_value_at_percentile(99) > 2_000_000 and jitter.p99_ns() > 1_000_000:
        pytest.skip(f"host too noisy to judge send lag: plain threads woke {jitter.p99_ns() / 1e6:.2f} ms late at p99")
    assert lag.get_value_at_percentile(99) <= 2_000_000, lag.get_value_at_percentile(99)
    assert recorder.errors(("trace", "all")) == {}
