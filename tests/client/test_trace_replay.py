"""Replay fidelity: the shipped Azure cut at 10x against the null model, second by second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_azure_cut_at_10x_delivers_every_second_and_sends_on_time(server):
    offsets = np.array([a.offset_ns for a in read_arrivals(AZURE, speed=SPEED)])
    expected = np.bincount(offsets // NS)
    window, recorder = replay(server.target)
    sent = np.array(window.sends_per_s[: len(expected)])
    assert sent.sum() == len(offsets) == window.offered["default"]
    assert len(expected) >= 29  # a 30-second window
    error = np.abs(sent - expected) / np.maximum(expected, 1)
    assert error.max() <= 0.01, {"worst second": int(error.argmax()), "sent": sent.tolist(), "trace": expected.tolist()}
    lag = recorder.histogram(("trace", "all"), "send_lag")
    assert lag.get_total_count() == len(offsets)
    assert lag.get_value_at_percentile(99) <= 2_000_000, lag.get_value_at_percentile(99)
    assert recorder.errors(("trace", "all")) == {}
