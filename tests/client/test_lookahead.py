"""Requests built ahead of their instants: the same requests, never built at the send, in bounded memory."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import uvloop

from tailmark.client.dispatcher import Dispatcher, Stop
from tailmark.client.lookahead import Lookahead
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.transport import MockTransport, ModelInfo, TensorInfo
from tailmark.protos import inference_pb2 as pb
from tailmark.traces.arrival import Arrival

MS = 1_000_000
TOKENS = ModelInfo("lm", "1", "test", (TensorInfo("input_ids", "INT64", (-1,)),), (), 0)
STALL_NS = 50 * MS  # a send this late means the host stopped the process (see test_trace_replay's WakeJitter)


def token_schedule(count: int, gap_ms: float) -> list[Arrival]:
    """Arrivals ``gap_ms`` apart, each with a payload size not seen before (a token-carrying trace)."""
    return [Arrival(offset_ns=int(i * gap_ms * MS), payload_size=100 + 7 * i) for i in range(count)]


class Replay:
    """An open-loop replay through the real dispatcher and sample pool, to a transport that answers at once.

    Records every request sent and the instant each one was built (the pool's payload calls, which come
    in arrival order)."""

    def __init__(self, *, lookahead_depth: int | None = None, build_delay_s: float = 0.0, model=TOKENS) -> None:
        self.sent: list[bytes] = []
        self.built_ns: list[int] = []
        self.pool = random_pool(model, count=8, seed=3)
        payload = self.pool.payload

        def timed_payload(*args):
            self.built_ns.append(time.perf_counter_ns())
            if build_delay_s:
                time.sleep(build_delay_s)  # a model whose requests take this long to build
            return payload(*args)

        self.pool.payload = timed_payload

        async def answer(request: bytes) -> bytes:
            self.sent.append(request)
            return b""

        extra = {} if lookahead_depth is None else {"lookahead_depth": lookahead_depth}
        self.dispatcher = Dispatcher(
            transport=MockTransport(model, answer),
            pool=self.pool,
            recorder=Recorder(),
            scenario="trace",
            sample_seed=5,
            **extra,
        )

    def run(self, schedule: list[Arrival]) -> Replay:
        async def main():
            never = Stop(min_duration_ns=2**62, min_queries=2**62)
            window = await self.dispatcher.open_loop(schedule, warmup_ns=0, stop=never, max_outstanding=0)
            await self.dispatcher.drain(10)
            self.dispatcher.recorder.flush()
            return window

        self.window = uvloop.run(main())
        self.lag = self.dispatcher.recorder.histogram(("trace", "all"), "send_lag")
        return self

    def built_late(self, schedule: list[Arrival]) -> int:
        """Requests built at or after their intended instant (on the hot path)."""
        start = self.window.start_ns
        return sum(built >= start + a.offset_ns for built, a in zip(self.built_ns, schedule))

    def skip_if_host_stalled(self) -> None:
        if self.lag.get_max_value() > STALL_NS:
            pytest.skip(f"the host stopped the process for {self.lag.get_max_value() / 1e6:.0f} ms")


def test_a_token_trace_never_builds_a_request_at_its_send():
    schedule = token_schedule(150, gap_ms=4.0)
    replay = Replay().run(schedule)
    assert len(replay.sent) == len(schedule)
    replay.skip_if_host_stalled()
    assert replay.dispatcher.lookahead.built_at_send == 0
    assert replay.built_late(schedule) == 0, "requests built at or after their intended instant"
    assert replay.pool.builds >= len(schedule)  # every size was new: the builds happened, ahead


def test_without_the_window_every_request_is_built_at_its_send():
    """The check above can fail: the old path builds each request after its instant."""
    schedule = token_schedule(40, gap_ms=4.0)
    replay = Replay(lookahead_depth=0).run(schedule)
    assert replay.dispatcher.lookahead.built_at_send == len(schedule)
    assert replay.built_late(schedule) == len(schedule)


def test_slow_builds_do_not_make_sends_late():
    """Requests that take 2 ms each to build (a big model's tensors), one every 5 ms: built ahead, the
    sends keep their instants; built at the send, every send is at least 2 ms late."""
    schedule = token_schedule(60, gap_ms=5.0)
    ahead = Replay(build_delay_s=0.002).run(schedule)
    inline = Replay(build_delay_s=0.002, lookahead_depth=0).run(schedule)
    ahead.skip_if_host_stalled()
    assert inline.lag.get_min_value() >= 2 * MS
    assert ahead.lag.get_value_at_percentile(50) < 1 * MS, ahead.lag.get_value_at_percentile(50)
    assert ahead.dispatcher.lookahead.built_at_send == 0


def test_the_requests_sent_are_those_built_at_the_send():
    """Samples are drawn in arrival order either way: the same bytes go out in the same order."""
    schedule = token_schedule(120, gap_ms=0.5)
    ahead = Replay().run(schedule)
    inline = Replay(lookahead_depth=0).run(schedule)
    assert ahead.sent == inline.sent
    assert len({pb.ModelInferRequest.FromString(r).inputs[0].shape[0] for r in ahead.sent}) == len(schedule)


def test_the_window_is_bounded_by_depth_and_horizon():
    """An endless schedule: prime builds the first horizon only, and never more than ``depth`` requests."""
    built: list[Arrival] = []

    def build(arrival: Arrival) -> bytes:
        built.append(arrival)
        return b"x"

    every_ms = (Arrival(offset_ns=i * MS) for i in itertools.count())
    ahead = Lookahead(every_ms, build, horizon_ns=50 * MS, depth=1000)
    ahead.prime()
    assert [a.offset_ns for a in built] == [i * MS for i in range(51)]  # offsets 0..50 ms
    dense = Lookahead((Arrival(offset_ns=0) for _ in itertools.count()), build, horizon_ns=50 * MS, depth=16)
    dense.prime()
    assert dense.built_ahead == 16
    assert len(dense._window) <= 17  # the built ones and at most one pulled ahead of them

    async def fill_far_ahead():
        await dense.fill(start_ns=time.perf_counter_ns(), until_ns=time.perf_counter_ns() + 10**9)

    asyncio.run(fill_far_ahead())
    assert dense.built_ahead == 16  # full: nothing more was built
    for _ in range(16):
        assert dense.head() is not None
        dense.take()
    assert dense.built_at_send == 0
    dense.head()
    dense.take()
    assert dense.built_at_send == 1  # the window was empty: built at the send


def test_fill_leaves_the_next_instant_alone():
    """No build starts when the next instant is nearer than a build's expected cost plus the margin."""
    ahead = Lookahead((Arrival(offset_ns=i * MS) for i in range(100)), lambda a: b"x", horizon_ns=10**9, depth=100)

    async def fill_now():
        now = time.perf_counter_ns()
        await ahead.fill(start_ns=now, until_ns=now + 10_000)  # 10 µs away

    asyncio.run(fill_now())
    assert ahead.built_ahead == 0


@pytest.mark.parametrize(
    ("choice", "model", "resized"),
    [
        ("auto", TOKENS, True),
        ("auto", ModelInfo("null", "1", "test", (TensorInfo("INPUT0", "FP32", (-1,)),), (), 0), False),
        ("tokens", ModelInfo("null", "1", "test", (TensorInfo("INPUT0", "FP32", (-1,)),), (), 0), True),
        ("none", TOKENS, False),
    ],
)
def test_the_dispatcher_resizes_by_the_choice(choice: str, model: ModelInfo, resized: bool):
    replay = Replay(model=model)
    replay.dispatcher = Dispatcher(
        transport=replay.dispatcher.transport,
        pool=replay.pool,
        recorder=Recorder(),
        scenario="trace",
        sample_seed=5,
        resize_inputs=choice,
    )
    schedule = token_schedule(10, gap_ms=0.5)
    replay.run(schedule)
    shapes = [list(pb.ModelInferRequest.FromString(r).inputs[0].shape) for r in replay.sent]
    expected = [[a.payload_size] for a in schedule] if resized else [[16]] * len(schedule)
    assert shapes == expected
