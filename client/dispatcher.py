"""The issue loop: wait for the intended instant, stamp, send, count. Nothing else happens here.

Open loop (Server, Poisson, fixed-interval, trace): each arrival's intended instant is the run's start
plus its offset; the loop sleeps to that absolute ``perf_counter_ns`` target (``Clock``: uvloop's
timers tick in whole milliseconds, so the last stretch is timed by a waker thread) and hands the
request to a task. A slow server never slows the schedule; if an in-flight cap holds a request back, the wait is
charged to it (intended→done), and shows as send lag. Requests are built ahead of their instants, in the
time the loop would otherwise sleep (``Lookahead``), so a send never waits on numpy or protobuf.

Closed loop (SingleStream, MultiStream, and concurrency's N slots): the next query is issued when the previous
one completes; intended = sent. A concurrency run's optional rate cap is a leaky bucket that only closed loops
use. Offline: every sample is intended at the start, issued as fast as the cap allows.

Arrivals intended before the warm-up ends are sent but not recorded.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tailmark.client.cancellation import CANCELLED_BY_CLIENT
from tailmark.client.lookahead import DEPTH, HORIZON_NS, Lookahead
from tailmark.client.recorder import Recorder
from tailmark.client.samples import SamplePool
from tailmark.client.token_metrics import TokenRecorder
from tailmark.client.transport import RequestFailed, Transport
from tailmark.traces.arrival import Arrival

COARSE_NS = 3_000_000  # farther than this: an ordinary asyncio sleep (uvloop's timers are 1 ms coarse)
SPIN_NS = 200_000  # nearer than this: yield to the loop until the instant
WAKE_EARLY_NS = 60_000  # the waker thread's head start for its own wake-up latency
RECENT_SENDS = 4096  # send instants kept for the backlog count at the window's end
LOST_AFTER = 200  # consecutive UNAVAILABLE answers: the target is gone, stop the run
NS = 1_000_000_000


def _count_second(per_s: list[int], second: int) -> None:
    if second >= 0:
        if len(per_s) <= second:
            per_s.extend([0] * (second + 1 - len(per_s)))
        per_s[second] += 1


class Clock:
    """Sleeps to absolute ``perf_counter_ns`` instants, to tens of microseconds, without burning a core.

    Far waits use the event loop's timer; the last few milliseconds are handed to a waker thread that
    sleeps with the OS's fine timer and wakes the loop (spinning there instead costs a core at ~500/s,
    which would then read as a client-bound run); the last 200 µs are spun.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def sleep_until(self, target_ns: int) -> None:
        gap = target_ns - time.perf_counter_ns()
        if gap > COARSE_NS:
            await asyncio.sleep((gap - COARSE_NS) / NS)
            gap = target_ns - time.perf_counter_ns()
        if gap > SPIN_NS:
            await self._wake_at(target_ns)
        while time.perf_counter_ns() < target_ns:
            await asyncio.sleep(0)

    def _wake_at(self, target_ns: int) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if self._thread is None or self._loop is not loop:
            self._loop = loop
            self._thread = threading.Thread(target=self._run, args=(loop,), name="tailmark-clock", daemon=True)
            self._thread.start()
        future = loop.create_future()
        self._requests.put((target_ns, future))
        return future

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            target_ns, future = item
            delay = (target_ns - WAKE_EARLY_NS - time.perf_counter_ns()) / NS
            if delay > 0:
                time.sleep(delay)
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the loop closed while we slept
                return

    def close(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            self._thread = None


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


RATE_CAP_BURST_S = 0.01  # a rate cap lets at most this many seconds' worth of sends through at once


def rate_limiter(rate_qps: float):
    """A leaky bucket (``aiolimiter.AsyncLimiter``) that lets ``rate_qps`` sends a second through, in bursts of
    at most 10 ms worth (at least one). Closed loops only: it sleeps on the event loop's timer, which ticks
    in whole milliseconds under uvloop, fine for a cap but too coarse for an open-loop schedule.

    Example::

        limiter = rate_limiter(200.0)
        await limiter.acquire()  # returns at once, or when the bucket has drained enough
    """
    from aiolimiter import AsyncLimiter

    burst = max(1.0, rate_qps * RATE_CAP_BURST_S)
    return AsyncLimiter(burst, burst / rate_qps)


@dataclass
class Stop:
    """When to stop issuing (LoadGen's rule): after the query that meets both minimums, or before one
    that would pass a maximum (0: none). ``elapsed_ns`` is the query's intended time in the window."""

    min_duration_ns: int
    min_queries: int
    max_duration_ns: int = 0
    max_queries: int = 0

    def exceeded(self, elapsed_ns: int, issued: int) -> bool:
        """Issuing a query at ``elapsed_ns`` after ``issued`` others would pass a maximum."""
        return bool(
            (self.max_duration_ns and elapsed_ns >= self.max_duration_ns)
            or (self.max_queries and issued >= self.max_queries)
        )

    def satisfied(self, elapsed_ns: int, issued: int) -> bool:
        """The last query issued (at ``elapsed_ns``, making ``issued``) met both minimums."""
        return elapsed_ns >= self.min_duration_ns and issued >= self.min_queries


@dataclass
class Window:
    """What the measured window saw, beside the recorder's histograms."""

    start_ns: int = 0  # the measured window's start (after warm-up)
    end_ns: int = 0  # LoadGen's end: last intended send (open loop), last issue (closed), last completion (Offline)
    offered: Counter[str] = field(default_factory=Counter)  # arrivals intended in the window, by class
    completions_per_s: list[int] = field(default_factory=list)
    sends_per_s: list[int] = field(default_factory=list)  # by the instant each request left: replay fidelity
    samples: int = 0  # samples completed in the window (a request may carry a batch)
    cpu_s: float = 0.0  # client process CPU time over the window
    held_by_cap: int = 0  # arrivals that had to wait for an in-flight slot (max_outstanding)
    deadlines: Counter[str] = field(default_factory=Counter)  # measured arrivals with their own deadline, by class
    interrupted: str = ""  # why the window ended early ("" if it did not)
    cancelled: Counter[str] = field(default_factory=Counter)  # measured requests the client cut on purpose, by class

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / NS


class Dispatcher:
    """Issues one scenario's requests through ``transport`` and records them under ``scenario``."""

    def __init__(
        self,
        *,
        transport: Transport,
        pool: SamplePool,
        recorder: Recorder,
        scenario: str,
        sample_seed: int,
        resize_inputs: str = "auto",
        lookahead_depth: int = DEPTH,
        tokens: TokenRecorder | None = None,
    ) -> None:
        """``resize_inputs``: which inputs an arrival's payload size resizes (settings.resize_inputs);
        ``lookahead_depth``: requests built ahead of the open loop (0: each at its send, the old path);
        ``tokens``: records each measured generative answer's token timings (client/token_metrics.py)."""
        self.tokens = tokens
        self.transport = transport
        self.pool = pool
        self._resized = pool.resized_inputs(resize_inputs)
        self.lookahead_depth = lookahead_depth
        self.lookahead: Lookahead | None = None  # the last open loop's window (its build counts)
        self.recorder = recorder
        self.scenario = scenario
        self._rng = random.Random(sample_seed)
        self.outstanding = 0
        self.issued = 0  # measured queries issued
        self.completed = 0
        self.samples_completed = 0
        self.failed = 0
        self.window = Window()
        self.stop_reason = ""  # set from outside (Ctrl-C) or by the loss detector
        self._slot_freed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._unavailable_streak = 0
        self._clock = Clock()
        self._recent_sends: deque[int] = deque(maxlen=RECENT_SENDS)  # send instants of the last measured requests

    def unsent_at_end(self) -> int:
        """Measured requests not yet sent when the window's last intended instant passed (after ``drain``).

        Only the newest ``RECENT_SENDS`` send instants are kept: a larger backlog reads as that many."""
        end_ns = self.window.end_ns
        return sum(1 for sent_ns in self._recent_sends if sent_ns > end_ns)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    # --- completion path ---

    def _count_done(self, done_ns: int) -> None:
        _count_second(self.window.completions_per_s, (done_ns - self.window.start_ns) // NS)

    async def _send(
        self,
        payload: bytes,
        intended_ns: int,
        traffic_class: str,
        measured: bool,
        samples: int = 1,
        deadline_ns: int = 0,
    ) -> object:
        """Send one request and count it; returns its answer (None when it failed: multi-turn sessions read it)."""
        sent_ns = time.perf_counter_ns()
        if measured:
            _count_second(self.window.sends_per_s, (sent_ns - self.window.start_ns) // NS)
            self._recent_sends.append(sent_ns)
        timeout_s = None
        if deadline_ns:  # a budget from the intended instant: the time spent waiting to send is spent
            timeout_s = (intended_ns + deadline_ns - sent_ns) / NS
        try:
            if timeout_s is not None and timeout_s <= 0:
                raise RequestFailed("DEADLINE_EXCEEDED", "the deadline passed before the request could be sent")
            answer = await self.transport.infer(payload, timeout_s)
        except RequestFailed as exc:
            self._failure(exc.status, traffic_class, measured, intended_ns, sent_ns, len(payload))
            return None
        else:
            key = (self.scenario, traffic_class)
            self._succeeded(measured, key, intended_ns, sent_ns, len(payload), samples, answer)
            return answer
        finally:
            self.outstanding -= 1
            self._slot_freed.set()

    def _succeeded(
        self,
        measured: bool,
        key: tuple[str, str],
        intended_ns: int,
        sent_ns: int,
        request_bytes: int,
        samples: int,
        answer: object = None,
    ) -> None:
        """An answer arrived now: stamp it and count it (recorded only inside the measured window)."""
        done_ns = time.perf_counter_ns()
        self._unavailable_streak = 0
        if measured:
            self.recorder.record(key, intended_ns, sent_ns, done_ns, request_bytes)
            if self.tokens is not None:
                self.tokens.record(key, intended_ns, sent_ns, done_ns, answer)
            self.completed += 1
            self.samples_completed += samples
            self._count_done(done_ns)

    def _failure(
        self, status: str, traffic_class: str, measured: bool, intended_ns: int, sent_ns: int, request_bytes: int
    ) -> None:
        """Count a failed request (with its instants and size, for the request log) and watch for a lost target.
        A request the client cancelled on purpose (client/cancellation.py) is counted apart, not as an error."""
        if status == CANCELLED_BY_CLIENT:
            if measured:
                self.window.cancelled[traffic_class] += 1
            return
        if measured:
            self.recorder.record_error((self.scenario, traffic_class), status, intended_ns, sent_ns, request_bytes)
            self.failed += 1
        if status == "UNAVAILABLE":
            self._unavailable_streak += 1
            if self._unavailable_streak >= LOST_AFTER:
                self.request_stop(f"target lost: {LOST_AFTER} requests in a row failed with UNAVAILABLE")
        else:
            self._unavailable_streak = 0

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_for_slot(self, cap: int) -> None:
        if self.outstanding >= cap:
            self.window.held_by_cap += 1
        while self.outstanding >= cap:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def drain(self, timeout_s: float) -> None:
        """Wait for requests in flight; cancel the rest after ``timeout_s``."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()

    def _sample(self, arrival: Arrival) -> int:
        return arrival.sample_id if arrival.sample_id >= 0 else self._rng.randrange(self.pool.count)

    def _request(self, arrival: Arrival) -> bytes:
        if arrival.output_tokens and getattr(self.pool, "generative", False):  # an LLM trace's output length
            sample = self._sample(arrival)
            return self.pool.payload(sample, 1, arrival.payload_size, output_tokens=arrival.output_tokens)
        return self.pool.payload(self._sample(arrival), arrival.batch_size, arrival.payload_size, self._resized)

    # --- open loop ---

    async def open_loop(
        self, schedule: Iterable[Arrival], *, warmup_ns: int, stop: Stop, max_outstanding: int, start_ns: int = 0
    ) -> Window:
        """``start_ns``: the schedule's time 0 (0: now, once the first requests are built); a mixed scenario's
        classes share one."""
        ahead = self.lookahead = Lookahead(schedule, self._request, horizon_ns=HORIZON_NS, depth=self.lookahead_depth)
        ahead.prime()  # the first requests, built before the clock starts
        start_ns = start_ns or time.perf_counter_ns()
        window = self.window
        window.start_ns = window.end_ns = start_ns + warmup_ns
        cpu0 = None
        while (arrival := ahead.head()) is not None:
            intended_ns = start_ns + arrival.offset_ns
            measured = arrival.offset_ns >= warmup_ns
            if measured:
                if cpu0 is None:
                    cpu0 = time.process_time()
                if stop.exceeded(intended_ns - window.start_ns, self.issued):
                    break
            if self.stop_reason:
                break
            if intended_ns > time.perf_counter_ns():
                await ahead.fill(start_ns, intended_ns)
                await self._clock.sleep_until(intended_ns)
            if max_outstanding:
                await self._wait_for_slot(max_outstanding)
            payload = ahead.take()
            self.outstanding += 1
            self._spawn(
                self._send(
                    payload, intended_ns, arrival.traffic_class, measured, arrival.batch_size, arrival.deadline_ns
                )
            )
            if measured:
                self.issued += 1
                window.offered[arrival.traffic_class] += 1
                if arrival.deadline_ns:
                    window.deadlines[arrival.traffic_class] += 1
                window.end_ns = intended_ns
                if stop.satisfied(intended_ns - window.start_ns, self.issued):
                    break
        window.cpu_s = time.process_time() - (cpu0 if cpu0 is not None else time.process_time())
        window.interrupted = self.stop_reason
        self._clock.close()
        return window

    # --- closed loop ---

    async def closed_loop(self, *, samples_per_query: int, warmup_ns: int, stop: Stop, traffic_class: str) -> Window:
        """SingleStream/MultiStream: one query in flight; a query of N samples is one batched request
        when the model batches that far, else N concurrent requests that all must finish."""
        batched = self.pool.batching and samples_per_query <= self.pool.model.max_batch_size
        key = (self.scenario, traffic_class)
        window = self.window
        begin = time.perf_counter_ns()
        window.start_ns = window.end_ns = begin + warmup_ns
        cpu0 = None
        while not self.stop_reason:
            now = time.perf_counter_ns()
            measured = now >= window.start_ns
            if measured:
                if cpu0 is None:
                    cpu0 = time.process_time()
                if stop.exceeded(now - window.start_ns, self.issued):
                    break
            sample = self._rng.randrange(self.pool.count)
            if batched or samples_per_query == 1:
                payloads = [self.pool.payload(sample, samples_per_query if batched else 1)]
            else:
                payloads = [self.pool.payload(sample + i) for i in range(samples_per_query)]
            issued_ns = time.perf_counter_ns()
            results = await asyncio.gather(*(self.transport.infer(p) for p in payloads), return_exceptions=True)
            done_ns = time.perf_counter_ns()
            failures = [r for r in results if isinstance(r, BaseException)]
            for failure in failures:
                if not isinstance(failure, RequestFailed):
                    raise failure
            request_bytes = sum(len(p) for p in payloads)
            if failures:
                self._failure(failures[0].status, traffic_class, measured, issued_ns, issued_ns, request_bytes)
            else:
                self._unavailable_streak = 0
                if measured:
                    self.recorder.record(key, issued_ns, issued_ns, done_ns, request_bytes)
                    if self.tokens is not None and len(results) == 1:
                        self.tokens.record(key, issued_ns, issued_ns, done_ns, results[0])
                    self.completed += 1
                    self.samples_completed += samples_per_query
                    self._count_done(done_ns)
            if measured:
                self.issued += 1
                window.offered[traffic_class] += 1
                window.end_ns = issued_ns
                if stop.satisfied(issued_ns - window.start_ns, self.issued):
                    break
        window.cpu_s = time.process_time() - (cpu0 if cpu0 is not None else time.process_time())
        window.interrupted = self.stop_reason
        return window

    # --- closed loop of N in flight (the concurrency scenario) ---

    async def concurrent_loop(
        self,
        *,
        concurrency: int,
        think_time_ns: int,
        rate_cap_qps: float,
        batch_size: int,
        warmup_ns: int,
        stop: Stop,
        traffic_class: str,
    ) -> Window:
        """``concurrency`` slots, each sending its next request when its last one completes (after
        ``think_time_ns``), so N requests are in flight; intended = sent, so latency is sent -> done.

        ``rate_cap_qps`` (0: none) makes every send wait for a leaky bucket first (``rate_limiter``); the wait
        comes before the send is stamped, so it throttles the client without counting as the server's latency.
        The limiter is for this closed loop only: the open loop's schedule never goes through it."""
        limiter = rate_limiter(rate_cap_qps) if rate_cap_qps > 0 else None
        key = (self.scenario, traffic_class)
        window = self.window
        window.start_ns = window.end_ns = time.perf_counter_ns() + warmup_ns
        cpu0: list[float] = []
        finished = asyncio.Event()  # the stop rule has been met: no slot sends again

        async def slot() -> None:
            while not (self.stop_reason or finished.is_set()):
                if limiter is not None:
                    await limiter.acquire()
                    if self.stop_reason or finished.is_set():
                        return
                payload = self.pool.payload(self._rng.randrange(self.pool.count), batch_size)
                sent_ns = time.perf_counter_ns()
                measured = sent_ns >= window.start_ns
                if measured:
                    if not cpu0:
                        cpu0.append(time.process_time())
                    if stop.exceeded(sent_ns - window.start_ns, self.issued):
                        finished.set()
                        return
                    self.issued += 1
                    window.offered[traffic_class] += 1
                    window.end_ns = max(window.end_ns, sent_ns)
                    _count_second(window.sends_per_s, (sent_ns - window.start_ns) // NS)
                    if stop.satisfied(sent_ns - window.start_ns, self.issued):
                        finished.set()  # this request still goes; the other slots stop after theirs
                self.outstanding += 1
                try:
                    answer = await self.transport.infer(payload)
                except RequestFailed as exc:
                    self._failure(exc.status, traffic_class, measured, sent_ns, sent_ns, len(payload))
                else:
                    self._succeeded(measured, key, sent_ns, sent_ns, len(payload), batch_size, answer)
                finally:
                    self.outstanding -= 1
                if think_time_ns and not finished.is_set():
                    await self._clock.sleep_until(time.perf_counter_ns() + think_time_ns)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(slot())
        finally:
            self._clock.close()
        window.cpu_s = time.process_time() - (cpu0[0] if cpu0 else time.process_time())
        window.interrupted = self.stop_reason
        return window

    # --- Offline ---

    async def offline(self, *, sample_count: int, batch_size: int, max_outstanding: int, traffic_class: str) -> Window:
        """All samples intended at the start; the window ends at the last completion."""
        window = self.window
        window.start_ns = start_ns = time.perf_counter_ns()
        cpu0 = time.process_time()
        remaining = sample_count
        while remaining > 0 and not self.stop_reason:
            if max_outstanding:
                await self._wait_for_slot(max_outstanding)
            batch = min(batch_size, remaining)
            payload = self.pool.payload(self._rng.randrange(self.pool.count), batch)
            self.outstanding += 1
            self._spawn(self._send(payload, start_ns, traffic_class, True, batch))
            self.issued += 1
            window.offered[traffic_class] += 1
            remaining -= batch
        await self.drain(timeout_s=3600)
        window.end_ns = time.perf_counter_ns()
        window.cpu_s = time.process_time() - cpu0
        window.interrupted = self.stop_reason
        return window
