"""Lazy transformations of arrival streams (``Arrival`` or ``Record``; token counts survive).

Each takes and returns an iterator sorted by offset, so chains stay O(1) in memory, e.g.::

    speed(thin(cut(read_records(path), 60, 360), keep=0.5, seed=1), 2.0)
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np

from tailmark.traces.arrival import Arrival
from tailmark.traces.format import Record

T = TypeVar("T", Arrival, Record)
NS = 1_000_000_000


def limit(arrivals: Iterable[T], *, duration_s: float = 0.0, count: int = 0) -> Iterator[T]:
    """Arrivals before ``duration_s`` and at most ``count`` of them (0: no bound); stops reading there."""
    if duration_s < 0 or count < 0:
        raise ValueError(f"duration_s={duration_s}, count={count} requested; must be ≥ 0")
    it: Iterator[T] = iter(arrivals)
    if count:
        it = itertools.islice(it, count)
    if duration_s:
        end_ns = round(duration_s * NS)
        it = itertools.takewhile(lambda a: a.offset_ns < end_ns, it)
    return it


def speed(arrivals: Iterable[T], factor: float) -> Iterator[T]:
    """Replay ``factor`` times faster (2.0 halves every offset); deadlines are budgets and stay."""
    if not factor > 0:
        raise ValueError(f"speed={factor} requested; must be > 0")
    return (a._replace(offset_ns=round(a.offset_ns / factor)) for a in arrivals)


def cut(arrivals: Iterable[T], start_s: float, end_s: float = 0.0, *, rebase: bool = True) -> Iterator[T]:
    """Arrivals in ``[start_s, end_s)`` (end 0: to the end), shifted so ``start_s`` becomes 0 unless not ``rebase``."""
    start_ns, end_ns = round(start_s * NS), round(end_s * NS)
    if start_ns < 0 or (end_ns and end_ns <= start_ns):
        raise ValueError(f"window [{start_s}, {end_s}) s requested; need 0 ≤ start < end")
    return _cut(arrivals, start_ns, end_ns, start_ns if rebase else 0)


def _cut(arrivals: Iterable[T], start_ns: int, end_ns: int, shift: int) -> Iterator[T]:
    for a in arrivals:
        if end_ns and a.offset_ns >= end_ns:
            return  # sorted input: nothing later can be inside, so stop reading
        if a.offset_ns >= start_ns:
            yield a._replace(offset_ns=a.offset_ns - shift)


def thin(arrivals: Iterable[T], keep: float, *, seed: int = 0) -> Iterator[T]:
    """Keep each arrival independently with probability ``keep`` (thinned Poisson stays Poisson)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep={keep} requested; must be in (0, 1]")
    return _thin(iter(arrivals), keep, np.random.default_rng(seed))


def _thin(it: Iterator[T], keep: float, rng: np.random.Generator) -> Iterator[T]:
    while True:
        block = list(itertools.islice(it, 4096))
        if not block:
            return
        mask = (rng.random(len(block)) < keep).tolist()
        yield from itertools.compress(block, mask)


def loop(source: Callable[[], Iterable[T]], times: int, *, period_s: float = 0.0) -> Iterator[T]:
    """``times`` passes over ``source()`` (called once per pass, so a file is re-read, not held), shifted by a period.

    The default period: if the first arrival is at offset 0, the last offset plus the mean gap (the seam
    looks like any other gap); if it is later (a lead-in gap, as perf_analyzer intervals have), the last
    offset, so the next pass's lead-in is the seam. A one-arrival pass needs an explicit ``period_s``.
    """
    if times < 1:
        raise ValueError(f"times={times} requested; must be ≥ 1")
    period_ns = round(period_s * NS)
    if period_ns < 0:
        raise ValueError(f"period_s={period_s} requested; must be ≥ 0")
    return _loop(source, times, period_ns)


def _loop(source: Callable[[], Iterable[T]], times: int, period_ns: int) -> Iterator[T]:
    for k in range(times):
        n, first, last = 0, 0, 0
        for a in source():
            if n == 0:
                first = a.offset_ns
            n, last = n + 1, a.offset_ns
            yield a._replace(offset_ns=a.offset_ns + k * period_ns) if k else a
        if k == 0 and not period_ns:
            if first > 0:
                period_ns = last
            elif n < 2:
                raise ValueError("cannot infer a loop period from fewer than 2 arrivals; give period_s")
            else:
                period_ns = last + round(last / (n - 1))
        if period_ns < last:
            raise ValueError(f"period_s={period_ns / NS} is shorter than one pass ({last / NS} s)")


def merge(streams: Iterable[tuple[str | None, Iterable[T]]]) -> Iterator[T]:
    """Interleave sorted streams by offset; each ``(class, stream)`` is relabelled to that class (None: keep)."""
    labelled = [s if cls is None else relabel(s, cls) for cls, s in streams]
    return heapq.merge(*labelled, key=lambda a: a.offset_ns)


def relabel(arrivals: Iterable[T], traffic_class: str) -> Iterator[T]:
    """Every arrival in ``traffic_class``."""
    if not traffic_class:
        raise ValueError("traffic class must be a non-empty string")
    return (a._replace(traffic_class=traffic_class) for a in arrivals)


def with_deadline(arrivals: Iterable[T], deadline_s: float) -> Iterator[T]:
    """Every arrival gets a per-request deadline of ``deadline_s`` (a budget from its intended time)."""
    deadline_ns = round(deadline_s * NS)
    if deadline_ns <= 0:
        raise ValueError(f"deadline_s={deadline_s} requested; must be > 0")
    return (a._replace(deadline_ns=deadline_ns) for a in arrivals)
