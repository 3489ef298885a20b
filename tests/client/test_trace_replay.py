"""Replay fidelity: the shipped Azure cut at 10x against the null model, second by second."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import uvloop

from tailmark.client.attribution import HOST_EXPLAINS_SHARE, HOST_WAIT_PCT
from tailmark.client.dispatcher import NS, Dispatcher, Stop
from tailmark.client.host_probe import HostProbe
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.transport import GrpcTransport
from tailmark.traces.reader import read_arrivals

AZURE = Path(__file__).resolve().parents[2] / "traces" / "samples" / "azure_conv_5min.jsonl"
SPEED = 10.0  # 300 s of trace in 30 s
WINDOW_S = 15  # of which the fidelity test replays the first half


def replay(target: str, *, speed: float = SPEED, resize_inputs: str = "auto", max_duration_s: float = 0.0):
    """The shipped Azure cut through the real dispatcher to the server's ``null`` model (FP32 [-1])."""
    built_ns: list[int] = []

    async def main():
        transport = await GrpcTransport.connect(target)
        try:
            pool = random_pool(await transport.model_info("null"), count=64, seed=1)
            payload = pool.payload

            def timed_payload(*args):  # called once per arrival, in arrival order
                built_ns.append(time.perf_counter_ns())
                return payload(*args)

            pool.payload = timed_payload
            dispatcher = Dispatcher(
                transport=transport,
                pool=pool,
                recorder=Recorder(),
                scenario="trace",
                sample_seed=1,
                resize_inputs=resize_inputs,
            )
            never = Stop(min_duration_ns=2**62, min_queries=2**62, max_duration_ns=int(max_duration_s * NS))
            window = await dispatcher.open_loop(
                read_arrivals(AZURE, speed=speed), warmup_ns=0, stop=never, max_outstanding=0
            )
            await dispatcher.drain(30)
            dispatcher.recorder.flush()
            return window, dispatcher.recorder, dispatcher, built_ns
        finally:
            await transport.aclose()

    return uvloop.run(main())


class HostWatch:
    """The client's own host probe (a separate process waking every 2 ms) and the test process's run-queue wait
    over the replay. The host, not the client, broke the 2 ms bound when they explain the send lag by the tool's
    own rule (client/attribution.py: the probe woke at least half as late at p99, or the client waited for a CPU
    2 % of the time) or when the host held the probe more than a whole period late for 0.5 % of the run's time
    (its missed instants): a Poisson replay's sends land in such stalls in proportion to their time, while the
    probe's p99 counts wake-ups, one per stall. Measured here on an idle box with noisy neighbours: lag p99 0.6 ms
    with the probe held 0.33 % of the time, lag p99 9.3 ms with it held 4.3 % (probe p99 3.5 ms, client waiting
    0.6 %: the attribution rule alone did not explain it)."""

    def __enter__(self) -> HostWatch:
        self.probe = HostProbe()
        self.probe.start()
        self.probe.reset()
        return self

    def __exit__(self, *exc) -> None:
        self.window = self.probe.report()
        self.probe.close()

    def explains(self, lag_p99_ns: int) -> str | None:
        w = self.window
        if w is None:
            return None
        late, wait = w.lateness_ns(99.0), w.client_wait_pct or 0.0
        held_pct = 100.0 * w.missed * w.period_us / 1e6 / w.wall_s if w.wall_s > 0 else 0.0
        if late >= HOST_EXPLAINS_SHARE * lag_p99_ns or wait >= HOST_WAIT_PCT or held_pct >= 0.5:
            return (f"host too noisy to judge send lag: probe woke {late / 1e6:.2f} ms late at p99 and was held "
                    f"{held_pct:.2f} % of the time, the client waited for a CPU {wait:.1f} % of it")  # fmt: skip
        return None


def test_azure_cut_at_10x_delivers_every_second_and_sends_on_time(server):
    """The cut's first 150 s at 10x: a 15-second window (the whole 30 s judged no more, and took 15 s longer)."""
    offsets = np.array([a.offset_ns for a in read_arrivals(AZURE, speed=SPEED)])
    offsets = offsets[offsets < WINDOW_S * NS]
    expected = np.bincount(offsets // NS)
    with HostWatch() as host:
        window, recorder, _, _ = replay(server.target, max_duration_s=WINDOW_S)
    sent = np.array(window.sends_per_s[: len(expected)])
    assert sent.sum() == len(offsets) == window.offered["default"]
    assert len(expected) == WINDOW_S
    detail = {"sent": sent.tolist(), "trace": expected.tolist()}
    # At ~52 arrivals/s, 1 % is half a request: a single request intended just before a second boundary and sent
    # after it (within the send-lag bound checked below) moves one count to the next second. So: every second
    # within 1 % or one request, and never more than one request behind or ahead of the trace at any boundary.
    assert (np.abs(sent - expected) <= np.maximum(0.01 * expected, 1)).all(), detail
    assert np.abs(np.cumsum(sent) - np.cumsum(expected)).max() <= 1, detail
    lag = recorder.histogram(("trace", "all"), "send_lag")
    assert lag.get_total_count() == len(offsets)
    if lag.get_value_at_percentile(99) > 2_000_000 and (why := host.explains(lag.get_value_at_percentile(99))):
        pytest.skip(why)
    assert lag.get_value_at_percentile(99) <= 2_000_000, lag.get_value_at_percentile(99)
    assert recorder.errors(("trace", "all")) == {}


def test_token_driven_payloads_are_built_ahead_and_leave_on_time(server):
    """The same cut at 30x with its token counts resizing the input (--resize-inputs tokens): about 1,250
    requests, nearly all of new sizes, every one built before its intended instant (none on the send path), the
    server answering them all, and send lag as low as a replay without token counts."""
    with HostWatch() as host:
        window, recorder, dispatcher, built_ns = replay(server.target, speed=30.0, resize_inputs="tokens",
                                                        max_duration_s=8.0)  # fmt: skip
    sent = sum(window.sends_per_s)
    arrivals = list(itertools.islice(read_arrivals(AZURE, speed=30.0), sent))
    assert sent >= 1_000 and len({a.payload_size for a in arrivals}) >= 400
    assert dispatcher.pool.builds >= 0.9 * sent  # nearly every request was new
    assert recorder.errors(("trace", "all")) == {}
    lag = recorder.histogram(("trace", "all"), "send_lag")
    assert lag.get_total_count() == sent
    if lag.get_max_value() > 50_000_000:
        pytest.skip(f"the host stopped the client for {lag.get_max_value() / 1e6:.0f} ms")
    assert dispatcher.lookahead.built_at_send == 0
    late = [a for a, built in zip(arrivals, built_ns) if built >= window.start_ns + a.offset_ns]
    assert not late, f"{len(late)} of {sent} requests built at or after their instant"
    if lag.get_value_at_percentile(99) > 2_000_000 and (why := host.explains(lag.get_value_at_percentile(99))):
        pytest.skip(why)
    assert lag.get_value_at_percentile(99) <= 2_000_000, lag.get_value_at_percentile(99)
