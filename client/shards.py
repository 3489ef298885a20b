"""One shard of a load split over client processes or hosts: ``tailmark run --shard I/N --start-at T``.

N processes (``--workers N`` on one host, or one per pod of a Kubernetes Indexed Job) share one arrival
schedule. Every shard walks the whole single-process schedule of the scenario, for the same settings and seed,
and keeps the arrivals whose position in it is I modulo N, so the union of the shards is exactly that schedule,
arrival for arrival. The single process's stop rule (LoadGen's: the query that meets both minimums, or before
one that would pass a maximum) is applied to the whole schedule's counts, so every shard ends where the single
process would have; the shard's own dispatcher gets a stop that never fires and runs its share to that end.
Offline splits its requests the same way (request k of the single process goes to shard k mod N), and an
in-flight cap (``--max-outstanding``) is split so the shards' caps add up to it.

Each shard records (``environment.shard`` in results.json) the common start instant, how late its first
scenario's schedule actually began against it, the wall-clock instant each scenario's schedule began, and what
it could learn of its clock (client/clock_check.py). ``tailmark merge`` judges those (client/shard_merge.py).
Closed loops (single-stream, multi-stream, concurrency) have no arrivals to split and are refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from tailmark.client.dispatcher import NS, Stop, Window
from tailmark.client.errors import ConfigError
from tailmark.client.settings import CLOSED_LOOP, EffectiveSettings, Scenario
from tailmark.traces.arrival import Arrival

READY = "tailmark run: ready for the common start: shard"  # what a --start-at stdin shard says before it reads
NEVER = 2**62  # a minimum no shard reaches on its own: the whole schedule's stop point ends it
STDIN = "stdin"
FAR_FUTURE_S = 24 * 3600.0  # a start instant further ahead than this is a mistake, not a plan


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` with 0 <= I < N (0-based, like a Kubernetes Indexed Job's completion index)."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N (e.g. 0/3, 1/3, 2/3)")
    return i, n


def parse_start_at(text: str) -> float | None:
    """An absolute instant as unix seconds: ISO 8601 (no zone: UTC) or unix seconds, e.g. 1767000000.5.
    ``stdin``: None, the instant comes on stdin once the shard is ready (how ``--workers`` starts its children)."""
    if text == STDIN:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--start-at {text!r}: expected an ISO 8601 instant (2026-12-06T12:00:00Z) or unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SPLITTABLE = frozenset({Scenario.SERVER, Scenario.POISSON, Scenario.FIXED_INTERVAL, Scenario.TRACE, Scenario.OFFLINE})


def refuse_unsplittable(scenarios: Sequence[EffectiveSettings], flag: str) -> None:
    if len(scenarios) > 1:  # the common instant starts the first; nothing would line the shards up for the next
        names = ", ".join(str(s.scenario) for s in scenarios)
        raise ConfigError(f"{flag}: {len(scenarios)} scenarios ({names}); a split run measures one scenario, started "
                          "by every shard at the common instant: make one split run per scenario")  # fmt: skip
    for s in scenarios:
        if s.scenario in SPLITTABLE:
            continue
        why = "a closed loop (each query waits for the last)" if s.scenario in CLOSED_LOOP else "not one schedule"
        raise ConfigError(
            f"{flag}: {s.scenario} is {why}, with no arrivals to split; split the open-loop scenarios (server, "
            "poisson, fixed-interval, trace) or offline"
        )


def wall_ns_of(perf_ns: int) -> int:
    """The wall-clock (unix, ns) instant of a ``perf_counter_ns`` reading taken in this process."""
    return time.time_ns() - time.perf_counter_ns() + perf_ns


@dataclass(eq=False)
class Shard:
    """This process's place in a split load; ``record`` is what results.json keeps of it."""

    index: int
    count: int
    start_at_s: float | None  # unix seconds: the first scenario's schedule starts here on every shard; None: on stdin
    record: dict[str, Any] = field(default_factory=dict)
    _waited: bool = False

    def __post_init__(self) -> None:
        self.record.update(index=self.index, count=self.count, started_late_s=None, scenarios=[], clock=None,
                           cpus=_cpus())  # fmt: skip
        if self.start_at_s is not None:
            self.set_start(self.start_at_s)

    def set_start(self, unix_s: float) -> None:
        self.start_at_s = unix_s
        self.record.update(start_at=iso(unix_s), start_at_unix_s=unix_s)

    def read_start(self, stdin: IO[str], stderr: IO[str]) -> None:
        """``--start-at stdin`` (``--workers``' children): say READY, then read the common instant from stdin."""
        print(f"{READY} {self.label}", file=stderr, flush=True)
        line = stdin.readline()
        try:
            self.set_start(float(line))
        except ValueError:
            raise ConfigError(f"--start-at stdin: expected unix seconds on stdin, got {line.strip()!r}") from None

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def check_start(self) -> None:
        if self.start_at_s is None:
            return
        ahead = self.start_at_s - time.time()
        if ahead > FAR_FUTURE_S:
            raise ConfigError(f"--start-at {iso(self.start_at_s)} is {ahead / 3600:.1f} h away; give an instant today")

    # --- splitting the work ---

    def schedule(self, schedule: Iterable[Arrival], stop: Stop, warmup_ns: int) -> tuple[Iterator[Arrival], Stop]:
        """This shard's arrivals, ending where the whole schedule's stop rule ends it; and a stop that never fires."""
        return _every_nth(schedule, stop, warmup_ns, self.index, self.count), Stop(NEVER, NEVER)

    def offline_samples(self, sample_count: int, batch_size: int) -> int:
        """Samples in this shard's requests: request k of the single process (``batch_size`` samples, the last
        one the rest) goes to shard k mod N."""
        requests = math.ceil(sample_count / batch_size)
        mine = range(self.index, requests, self.count)
        last = sample_count - (requests - 1) * batch_size
        return sum(last if k == requests - 1 else batch_size for k in mine)

    def cap(self, max_outstanding: int) -> int:
        """This shard's part of an in-flight cap (0: none); the parts add up to it (each at least 1)."""
        if not max_outstanding:
            return 0
        share = max_outstanding // self.count + (1 if self.index < max_outstanding % self.count else 0)
        return max(share, 1)

    def advice_share(self, s: EffectiveSettings) -> EffectiveSettings:
        """The settings as far as this process's own load goes (for the calibration's advice)."""
        return dataclasses.replace(s, target_qps=s.target_qps / self.count) if s.target_qps else s

    # --- the common start ---

    async def wait_for_start(self) -> None:
        """Before the first scenario: sleep until the common instant (to the millisecond, then spin)."""
        if self._waited:
            return
        self._waited = True
        assert self.start_at_s is not None, "read_start first"
        while (left := self.start_at_s - time.time()) > 0.002:
            await asyncio.sleep(min(left - 0.001, 1.0))
        while time.time() < self.start_at_s:
            await asyncio.sleep(0)

    def started(self, name: str, s: EffectiveSettings, window: Window) -> None:
        """Record when this scenario's schedule began (wall clock), and for the first, how late against T."""
        zero_ns = window.start_ns if s.scenario is Scenario.OFFLINE else window.start_ns - int(s.warmup_s * NS)
        zero_s = wall_ns_of(zero_ns) / NS
        entry = {"scenario": name, "schedule_start_unix_s": round(zero_s, 6)}
        if not self.record["scenarios"] and self.start_at_s is not None:
            intended = self.start_at_s + (s.warmup_s if s.scenario is Scenario.OFFLINE else 0.0)
            self.record["started_late_s"] = round(zero_s - intended, 6)
        self.record["scenarios"].append(entry)


def _cpus() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))  # after --workers' pinning: this shard's CPUs
    except (AttributeError, OSError):
        return None


def _every_nth(schedule: Iterable[Arrival], stop: Stop, warmup_ns: int, index: int, count: int) -> Iterator[Arrival]:
    """Arrivals at positions ``index`` mod ``count``, cut by ``stop`` as the single process's loop cuts it."""
    issued = 0
    for position, arrival in enumerate(schedule):
        measured = arrival.offset_ns >= warmup_ns
        elapsed = arrival.offset_ns - warmup_ns
        if measured and stop.exceeded(elapsed, issued):
            return
        if position % count == index:
            yield arrival
        if measured:
            issued += 1
            if stop.satisfied(elapsed, issued):
                return
