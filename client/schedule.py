"""The client's schedules: lazy iterators of ``Arrival`` that the dispatcher pulls one at a time.

The arrival processes themselves live in ``traces/generators.py`` and are re-exported here (``poisson``,
``fixed_interval``), so ``tailmark run --scenario poisson`` and ``tailmark trace gen poisson`` make the
same stream for the same rate and seed: the first arrival at offset 0, each later one a gap after the
previous (MLPerf LoadGen's Server schedule). This module adds what only the client needs: replaying
plain offsets (``timestamps``, ``timestamp_file``), and cutting and interleaving schedules.

The dispatcher adds its own start instant to ``offset_ns``. Nothing here builds a list of arrivals, so
memory stays O(1) however long a run lasts.

Combine them::

    mixed = merge(poisson(900.0, seed=1), fixed_interval(100.0, traffic_class="probe"))
    for arrival in take_duration(mixed, 60.0):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from tailmark.client.errors import TraceError
from tailmark.traces import transforms
from tailmark.traces.arrival import DEFAULT_CLASS, Arrival
from tailmark.traces.generators import fixed_interval, poisson

__all__ = [
    "ScheduleError",
    "fixed_interval",
    "merge",
    "poisson",
    "take_duration",
    "timestamp_file",
    "timestamps",
]

NS_PER_S = 1_000_000_000

Unit = Literal["s", "ms", "us", "ns"]
_NS_PER_UNIT: dict[str, int] = {"s": NS_PER_S, "ms": 1_000_000, "us": 1_000, "ns": 1}


class ScheduleError(TraceError, ValueError):
    """A timestamp offset or a schedule parameter was refused (the message says which and why)."""


def _to_ns(value: float | int, unit: Unit) -> int:
    if unit == "ns" and isinstance(value, int):
        return value
    return round(value * _NS_PER_UNIT[unit])


def timestamps(
    offsets: Iterable[float | int], unit: Unit = "s", traffic_class: str = DEFAULT_CLASS
) -> Iterator[Arrival]:
    """Replay a finite sequence of offsets from the start of the run (non-negative, never decreasing).

    Example::

        >>> [a.offset_ns for a in timestamps([0.0, 0.5, 1.25])]
        [0, 500000000, 1250000000]
        >>> [a.offset_ns for a in timestamps([10, 20], unit="ns", traffic_class="probe")]
        [10, 20]
    """
    if unit not in _NS_PER_UNIT:
        raise ScheduleError(f"unit={unit!r} requested; must be one of {', '.join(_NS_PER_UNIT)}")
    previous_ns = 0
    for index, value in enumerate(offsets):
        problem = _offset_problem(value)
        if problem:
            raise ScheduleError(f"offset #{index}: {problem}")
        offset_ns = _to_ns(value, unit)
        if offset_ns < previous_ns:
            raise ScheduleError(f"offset #{index}: {value} {unit} is before the previous offset (must not decrease)")
        previous_ns = offset_ns
        yield Arrival(offset_ns, traffic_class)


def _offset_problem(value: float | int) -> str:
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    if value < 0:
        return f"{value} is negative"
    return ""


def timestamp_file(path: str | Path, traffic_class: str = DEFAULT_CLASS) -> Iterator[Arrival]:
    """Replay a text file of offsets in seconds, one per line; blank lines and ``#`` comments are skipped.

    The file is read lazily, line by line. A bad line raises ``ScheduleError("path:line: what is wrong")``
    when the replay reaches it.

    Example::

        # trace.txt
        0.000
        0.0125   # 12.5 ms after the start
        0.0125   # two arrivals at the same instant are fine

        >>> [a.offset_ns for a in timestamp_file("trace.txt")]  # doctest: +SKIP
        [0, 12500000, 12500000]
    """
    previous_ns = 0
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 -- closed by the with below, inside the generator
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                seconds = float(text)
            except ValueError:
                raise ScheduleError(f"{path}:{line_no}: {text!r} is not a number of seconds") from None
            problem = _offset_problem(seconds)
            if problem:
                raise ScheduleError(f"{path}:{line_no}: {problem}")
            offset_ns = _to_ns(seconds, "s")
            if offset_ns < previous_ns:
                raise ScheduleError(
                    f"{path}:{line_no}: {text} s is before the previous offset {previous_ns / NS_PER_S:g} s "
                    "(offsets must not decrease)"
                )
            previous_ns = offset_ns
            yield Arrival(offset_ns, traffic_class)


def take_duration(schedule: Iterable[Arrival], duration_s: float) -> Iterator[Arrival]:
    """The arrivals of ``schedule`` whose offset is strictly before ``duration_s``; stops at the first later one.

    Example::

        >>> [a.offset_ns for a in take_duration(fixed_interval(2.0), 1.5)]
        [0, 500000000, 1000000000]
    """
    if not duration_s > 0 or math.isinf(duration_s):
        raise ScheduleError(f"duration_s={duration_s:g} requested; must be > 0 and finite")
    return transforms.limit(schedule, duration_s=duration_s)


def merge(*schedules: Iterable[Arrival]) -> Iterator[Arrival]:
    """Interleave several schedules (e.g. one per traffic class) by offset, lazily; ties keep argument order.

    Example::

        >>> both = merge(fixed_interval(2.0, traffic_class="a"), fixed_interval(1.0, traffic_class="b"))
        >>> [(a.offset_ns, a.traffic_class) for a in itertools.islice(both, 4)]
        [(0, 'a'), (0, 'b'), (500000000, 'a'), (1000000000, 'a')]
    """
    return transforms.merge((None, schedule) for schedule in schedules)
