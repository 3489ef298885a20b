"""Arrival processes: tiny lazy factories that yield ``Arrival`` forever (or until their input ends).

A schedule is a plain iterator; the dispatcher pulls ``next(schedule)`` and adds its own start instant to
``offset_ns``. Nothing here builds a list of arrivals, so memory stays O(1) however long a run lasts, and a
seeded schedule is the same on every machine (numpy's ``default_rng`` is platform independent).

Combine them::

    mixed = merge(poisson(900.0, seed=1), fixed_interval(100.0, traffic_class="probe"))
    for arrival in take_duration(mixed, 60.0):
        ...
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from tailmark.client.errors import TraceError
from tailmark.traces.arrival import DEFAULT_CLASS, Arrival

NS_PER_S = 1_000_000_000
# Exponential gaps are drawn this many at a time: one numpy call per chunk instead of one per arrival.
POISSON_CHUNK = 4096

Unit = Literal["s", "ms", "us", "ns"]
_NS_PER_UNIT: dict[str, int] = {"s": NS_PER_S, "ms": 1_000_000, "us": 1_000, "ns": 1}


class ScheduleError(TraceError, ValueError):
    """A schedule parameter or a timestamp offset was refused (the message says which and why)."""


def _check_rate(rate_qps: float) -> None:
    if not rate_qps > 0:  # also refuses NaN
        raise ScheduleError(f"rate_qps={rate_qps:g} requested; must be > 0")
    if math.isinf(rate_qps):
        raise ScheduleError(f"rate_qps={rate_qps:g} requested; must be finite")


def poisson(rate_qps: float, seed: int, traffic_class: str = DEFAULT_CLASS) -> Iterator[Arrival]:
    """Open-loop Poisson arrivals: exponential gaps with mean ``1/rate_qps`` seconds, first arrival after one gap.

    Offsets are whole nanoseconds. The fractional nanosecond is carried from chunk to chunk, so rounding
    never accumulates: offset k is the floor of the exact running sum of the first k gaps.

    Example::

        >>> from itertools import islice
        >>> [a.offset_ns for a in islice(poisson(1000.0, seed=7), 3)]
        [707529, 1732732, 2301281]
    """
    _check_rate(rate_qps)
    rng = np.random.default_rng(seed)
    mean_gap_ns = NS_PER_S / rate_qps
    base_ns = 0  # exact integer part of the running sum
    carry = 0.0  # its fractional part, in [0, 1)
    while True:
        sums = np.cumsum(rng.exponential(mean_gap_ns, POISSON_CHUNK))
        sums += carry
        whole = np.floor(sums)
        # Chunk-relative sums stay small, so float64 keeps sub-ns precision however long the run.
        offsets = (whole.astype(np.int64) + base_ns).tolist()
        last = float(whole[-1])
        base_ns += int(last)
        carry = float(sums[-1]) - last
        for offset_ns in offsets:
            yield Arrival(offset_ns, traffic_class)


def fixed_interval(rate_qps: float, traffic_class: str = DEFAULT_CLASS, phase_ns: int = 0) -> Iterator[Arrival]:
    """Constant-rate arrivals at ``phase_ns + floor(k * 1e9 / rate_qps)`` for k = 0, 1, 2, ...

    Each offset is computed from k in exact integer arithmetic (no running sum), so there is no drift even
    after billions of arrivals.

    Example::

        >>> from itertools import islice
        >>> [a.offset_ns for a in islice(fixed_interval(3.0), 4)]
        [0, 333333333, 666666666, 1000000000]
    """
    _check_rate(rate_qps)
    if phase_ns < 0:
        raise ScheduleError(f"phase_ns={phase_ns} requested; must be >= 0")
    num, den = rate_qps.as_integer_ratio()  # exact for int and float alike
    # period = 1e9 * den / num exactly, so offset_k = k * 1e9 * den // num
    step = NS_PER_S * den
    for k in itertools.count():
        yield Arrival(phase_ns + (k * step) // num, traffic_class)


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
    end_ns = round(duration_s * NS_PER_S)
    return itertools.takewhile(lambda arrival: arrival.offset_ns < end_ns, schedule)


def merge(*schedules: Iterable[Arrival]) -> Iterator[Arrival]:
    """Interleave several schedules (e.g. one per traffic class) by offset, lazily; ties keep argument order.

    Example::

        >>> both = merge(fixed_interval(2.0, "a"), fixed_interval(1.0, "b"))
        >>> [(a.offset_ns, a.traffic_class) for a in itertools.islice(both, 4)]
        [(0, 'a'), (0, 'b'), (500000000, 'a'), (1000000000, 'a')]
    """
    return heapq.merge(*schedules, key=operator.itemgetter(0))
