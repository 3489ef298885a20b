"""The look-ahead window: the next arrivals' requests, built while the issue loop would otherwise sleep.

A request is built and serialised the first time its (sample, batch, payload size) comes up, and a
trace whose rows carry token counts makes most requests new. Built at the send, that work delays the
send it belongs to and every send queued behind it. ``Lookahead`` pulls arrivals from the lazy schedule
ahead of the issue loop and builds their requests in the loop's idle time:

- ``prime``: before the clock starts, the arrivals of the first ``horizon_ns``;
- ``fill``: before each sleep, arrivals up to ``horizon_ns`` ahead of now, one at a time, stopping while
  one more build still fits before the instant the loop sleeps to (its expected cost, a slowly decaying
  maximum of the builds so far, plus a margin). It yields to the event loop first, so the send just handed
  to a task is stamped before any build, and then every ``YIELD_NS`` of building, so completions are too.

The window holds at most ``depth`` built arrivals (plus one pulled and not yet due), so memory is
O(window), never O(trace). The build callback draws samples in arrival order, so the requests sent are
exactly those built at the send. The builds run on the loop's own thread: they hold the GIL (protobuf,
bytes joins), so a worker thread would contend with the loop at the very instants it has to send.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

from tailmark.traces.arrival import Arrival

HORIZON_NS = 100_000_000  # build up to 100 ms of the schedule ahead
DEPTH = 256  # ... and at most this many requests
MARGIN_NS = 100_000  # stop building this long plus one build's cost before the next instant
YIELD_NS = 100_000  # let the event loop run after this much building
FIRST_COST_NS = 50_000  # the expected cost of a build before any was timed


class Lookahead:
    """Arrivals of ``schedule`` with their requests, ``build(arrival)``, made ahead of their instants."""

    def __init__(
        self,
        schedule: Iterable[Arrival],
        build: Callable[[Arrival], bytes],
        *,
        horizon_ns: int = HORIZON_NS,
        depth: int = DEPTH,
    ) -> None:
        self._schedule = iter(schedule)
        self._build = build
        self.horizon_ns = horizon_ns
        self.depth = depth  # 0: nothing ahead; every request is built at its send
        self._window: deque[list] = deque()  # [arrival, request | None]; the built ones first
        self._built = 0  # built entries at the window's front
        self._exhausted = False
        self._cost_ns = FIRST_COST_NS
        self.built_ahead = 0  # requests built before the loop reached them
        self.built_at_send = 0  # requests the loop had to build when it reached them (nothing ahead)

    def _pull(self) -> bool:
        if self._exhausted:
            return False
        arrival = next(self._schedule, None)
        if arrival is None:
            self._exhausted = True
            return False
        self._window.append([arrival, None])
        return True

    def head(self) -> Arrival | None:
        """The next arrival to send (None: the schedule is over)."""
        if not self._window and not self._pull():
            return None
        return self._window[0][0]

    def take(self) -> bytes:
        """The head's request, removed from the window; built now if it was not built ahead."""
        arrival, request = self._window.popleft()
        if self._built:
            self._built -= 1
            return request
        self.built_at_send += 1
        return self._timed_build(arrival)

    def _timed_build(self, arrival: Arrival) -> bytes:
        started = time.perf_counter_ns()
        request = self._build(arrival)
        cost = time.perf_counter_ns() - started
        self._cost_ns = max(cost, self._cost_ns - (self._cost_ns >> 4))  # decays by 1/16 a build
        return request

    def _build_next(self, until_offset_ns: int) -> bool:
        """Build the next unbuilt arrival if it is due by ``until_offset_ns`` and the window has room."""
        if self._built >= self.depth:
            return False
        if self._built == len(self._window) and not self._pull():
            return False
        entry = self._window[self._built]
        if entry[0].offset_ns > until_offset_ns:
            return False
        entry[1] = self._timed_build(entry[0])
        self._built += 1
        self.built_ahead += 1
        return True

    def prime(self) -> None:
        """Before the clock starts: build the arrivals of the first horizon."""
        while self._build_next(self.horizon_ns):
            pass

    async def fill(self, start_ns: int, until_ns: int) -> None:
        """Build ahead while one more build fits before ``until_ns`` (the instant the loop sleeps to next)."""
        if self._built >= self.depth:
            return
        await asyncio.sleep(0)  # the send the loop just handed to a task is stamped before any build
        yielded_ns = time.perf_counter_ns()
        while True:
            now = time.perf_counter_ns()
            if now + self._cost_ns + MARGIN_NS > until_ns:
                return
            if now - yielded_ns > YIELD_NS:
                await asyncio.sleep(0)
                yielded_ns = time.perf_counter_ns()
                continue
            if not self._build_next(now - start_ns + self.horizon_ns):
                return
