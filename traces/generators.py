"""Seeded arrival processes: each is an endless lazy iterator of ``Arrival`` (stop it with ``transforms.limit``).

This is the one implementation of every arrival process: ``tailmark trace gen`` writes these streams to a
file, and ``tailmark run`` (through ``client/schedule.py``) sends them, so the same rate and seed give the
same offsets either way.

Random numbers are drawn in numpy blocks (per-item draws cost a microsecond each), but arrivals are
still handed out one at a time, so memory stays O(block). The same seed gives the same arrivals on every
machine (numpy's ``default_rng`` is platform independent).

Renewal processes (poisson, gamma, batch) and fixed_interval put the first arrival at offset 0 and each
later one a gap after the previous, as MLPerf LoadGen schedules its Server queries (the query at 0, then
``timestamp += gap``). Offsets are whole nanoseconds, rounded down from the exact running sum of the gaps,
so rounding never accumulates.

Example::

    from tailmark.traces.transforms import limit
    arrivals = list(limit(poisson(100.0, seed=1), duration_s=1.0))  # about 100 arrivals
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from tailmark.traces.arrival import DEFAULT_CLASS, Arrival

BLOCK = 4096  # draws per numpy call
NS = 1_000_000_000


def _positive(name: str, value: float) -> None:
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{name}={value} requested; must be > 0")
    if math.isinf(value):
        raise ValueError(f"{name}={value} requested; must be finite")


def _from_gaps(draw_ns: Callable[[int], np.ndarray], traffic_class: str) -> Iterator[Arrival]:
    """Arrivals at 0 and then at the running sum of the gaps (ns) drawn ``BLOCK`` at a time.

    Offset k is the floor of the exact sum of the first k gaps: the sum is kept as an integer part and a
    fractional carry in [0, 1), and each block is summed relative to it, so float64 keeps sub-nanosecond
    precision however long the run and rounding never accumulates.
    """
    base_ns = 0  # integer part of the running sum
    carry = 0.0  # its fractional part
    while True:
        sums = np.cumsum(draw_ns(BLOCK))
        sums += carry
        whole = np.floor(sums)
        later = (whole[:-1].astype(np.int64) + base_ns).tolist()
        yield Arrival(base_ns, traffic_class)  # this block's first arrival: the sum so far, rounded down
        for offset_ns in later:
            yield Arrival(offset_ns, traffic_class)
        last = float(whole[-1])
        base_ns += int(last)
        carry = float(sums[-1]) - last


def poisson(rate_qps: float, *, seed: int = 0, traffic_class: str = DEFAULT_CLASS) -> Iterator[Arrival]:
    """Poisson arrivals: exponential gaps with mean ``1/rate_qps`` (inter-arrival CV 1), the first at offset 0.

    Example::

        >>> from itertools import islice
        >>> [a.offset_ns for a in islice(poisson(1000.0, seed=7), 4)]
        [0, 707529, 1732732, 2301281]
    """
    _positive("rate_qps", rate_qps)
    rng = np.random.default_rng(seed)
    mean_gap_ns = NS / rate_qps
    return _from_gaps(lambda n: rng.exponential(mean_gap_ns, n), traffic_class)


def fixed_interval(rate_qps: float, *, traffic_class: str = DEFAULT_CLASS, phase_ns: int = 0) -> Iterator[Arrival]:
    """One arrival every ``1/rate_qps`` seconds (CV 0): offset k is ``phase_ns + floor(k * 1e9 / rate_qps)``.

    Each offset is computed from k in exact integer arithmetic (the rate as an exact fraction, no running
    sum), so there is no drift even after billions of arrivals.

    Example::

        >>> from itertools import islice
        >>> [a.offset_ns for a in islice(fixed_interval(3.0), 4)]
        [0, 333333333, 666666666, 1000000000]
    """
    _positive("rate_qps", rate_qps)
    if phase_ns < 0:
        raise ValueError(f"phase_ns={phase_ns} requested; must be >= 0")
    num, den = float(rate_qps).as_integer_ratio()  # exact for int and float alike
    step = NS * den  # period = 1e9 * den / num exactly, so offset_k = k * 1e9 * den // num
    return (Arrival(phase_ns + (k * step) // num, traffic_class) for k in itertools.count())


def gamma(
    rate_qps: float, burstiness: float, *, seed: int = 0, traffic_class: str = DEFAULT_CLASS
) -> Iterator[Arrival]:
    """Gamma gaps of shape ``burstiness``: CV = 1/sqrt(burstiness); 1 is Poisson, < 1 burstier, > 1 smoother.

    This is vLLM's ``--burstiness`` parameter, so runs can be compared.
    """
    _positive("rate_qps", rate_qps)
    _positive("burstiness", burstiness)
    rng = np.random.default_rng(seed)
    scale_ns = NS / (rate_qps * burstiness)
    return _from_gaps(lambda n: rng.gamma(burstiness, scale_ns, n), traffic_class)


@dataclass(frozen=True, slots=True)
class BatchSizes:
    """A batch-size distribution over integers ≥ 1, parsed from text by ``parse``.

    ``fixed:K``, ``uniform:LO:HI`` (inclusive), ``geometric:MEAN`` (support 1, 2, ...), or weights
    ``1:0.5,4:0.3,8:0.2`` (normalised).
    """

    kind: str
    params: tuple[float, ...]
    sizes: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()

    @property
    def mean(self) -> float:
        match self.kind:
            case "fixed":
                return self.params[0]
            case "uniform":
                return (self.params[0] + self.params[1]) / 2
            case "geometric":
                return self.params[0]
            case _:
                return float(np.dot(self.sizes, self.weights))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        match self.kind:
            case "fixed":
                return np.full(n, int(self.params[0]), dtype=np.int64)
            case "uniform":
                return rng.integers(int(self.params[0]), int(self.params[1]) + 1, n)
            case "geometric":
                return rng.geometric(1.0 / self.params[0], n)
            case _:
                return rng.choice(np.array(self.sizes), size=n, p=np.array(self.weights))

    @classmethod
    def parse(cls, text: str) -> BatchSizes:
        head, _, rest = text.partition(":")
        try:
            if head in ("fixed", "uniform", "geometric"):
                params = tuple(float(p) for p in rest.split(":"))
                want = 2 if head == "uniform" else 1
                if len(params) != want:
                    raise ValueError(f"{head} takes {want} parameter(s)")
                if head in ("fixed", "uniform") and any(p != int(p) or p < 1 for p in params):
                    raise ValueError("sizes must be integers ≥ 1")
                if head == "uniform" and params[0] > params[1]:
                    raise ValueError("LO must be ≤ HI")
                if head == "geometric" and params[0] < 1:
                    raise ValueError("the mean must be ≥ 1")
                return cls(head, params)
            pairs = [item.split(":") for item in text.split(",")]
            sizes = tuple(int(size) for size, _ in pairs)
            weights = [float(w) for _, w in pairs]
        except ValueError as exc:
            raise ValueError(f"batch-size distribution {text!r}: {exc}") from None
        if any(s < 1 for s in sizes) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"batch-size distribution {text!r}: sizes must be ≥ 1 and weights ≥ 0, not all 0")
        total = sum(weights)
        return cls("weights", (), sizes, tuple(w / total for w in weights))


def batch(
    rate_qps: float,
    sizes: BatchSizes | str,
    *,
    split: bool = False,
    seed: int = 0,
    traffic_class: str = DEFAULT_CLASS,
) -> Iterator[Arrival]:
    """Compound Poisson: batch events at ``rate_qps``, each of a size drawn from ``sizes``.

    By default one request per event carries ``batch_size`` = the size; with ``split`` the event becomes
    that many batch-1 requests at the same instant. Samples per second = ``rate_qps * sizes.mean``.
    """
    _positive("rate_qps", rate_qps)
    dist = BatchSizes.parse(sizes) if isinstance(sizes, str) else sizes
    rng = np.random.default_rng(seed)
    events = poisson(rate_qps, seed=int(rng.integers(2**63)), traffic_class=traffic_class)
    return _batches(events, dist, split, rng)


def _batches(events: Iterator[Arrival], dist: BatchSizes, split: bool, rng: np.random.Generator) -> Iterator[Arrival]:
    while True:
        for k in dist.draw(rng, BLOCK).tolist():
            event = next(events)
            if split:
                for _ in range(k):
                    yield event
            else:
                yield event._replace(batch_size=k)


def onoff(
    rate_on_qps: float,
    rate_off_qps: float,
    mean_on_s: float,
    mean_off_s: float,
    *,
    seed: int = 0,
    traffic_class: str = DEFAULT_CLASS,
) -> Iterator[Arrival]:
    """Two-state Markov-modulated Poisson process: bursts at ``rate_on_qps``, lulls at ``rate_off_qps`` (may be 0).

    Sojourns are exponential with means ``mean_on_s``/``mean_off_s``; it starts in the "on" state.
    Mean rate = (rate_on*mean_on + rate_off*mean_off) / (mean_on + mean_off).
    """
    _positive("rate_on_qps", rate_on_qps)
    if not rate_off_qps >= 0:
        raise ValueError(f"rate_off_qps={rate_off_qps} requested; must be ≥ 0")
    _positive("mean_on_s", mean_on_s)
    _positive("mean_off_s", mean_off_s)
    return _onoff(rate_on_qps, rate_off_qps, mean_on_s, mean_off_s, np.random.default_rng(seed), traffic_class)


def _onoff(
    rate_on: float, rate_off: float, mean_on: float, mean_off: float, rng: np.random.Generator, traffic_class: str
) -> Iterator[Arrival]:
    start, on = 0.0, True
    while True:
        length = rng.exponential(mean_on if on else mean_off)
        # given their count, Poisson arrivals in an interval are uniform: exact and vectorised
        n = rng.poisson((rate_on if on else rate_off) * length)
        times = start + np.sort(rng.uniform(0.0, length, n))
        for ns in np.rint(times * NS).astype(np.int64).tolist():
            yield Arrival(ns, traffic_class)
        start += length
        on = not on


def _thinned(
    rate_at: Callable[[np.ndarray], np.ndarray], rate_max: float, rng: np.random.Generator, traffic_class: str
) -> Iterator[Arrival]:
    """Non-homogeneous Poisson by thinning (Lewis-Shedler): keep a rate_max point at t with rate(t)/rate_max."""
    t = 0.0
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / rate_max, BLOCK))
        t = float(times[-1])
        keep = rng.uniform(0.0, rate_max, BLOCK) < rate_at(times)
        for ns in np.rint(times[keep] * NS).astype(np.int64).tolist():
            yield Arrival(ns, traffic_class)


def diurnal(
    mean_qps: float,
    amplitude: float,
    period_s: float = 86_400.0,
    *,
    phase_s: float = 0.0,
    seed: int = 0,
    traffic_class: str = DEFAULT_CLASS,
) -> Iterator[Arrival]:
    """Poisson with a sinusoidal rate: ``mean_qps * (1 + amplitude * sin(2π (t + phase_s) / period_s))``.

    ``amplitude`` in [0, 1]: 0.5 swings between half and 1.5x the mean. Shrink ``period_s`` to test a
    day's shape in minutes.
    """
    _positive("mean_qps", mean_qps)
    _positive("period_s", period_s)
    if not 0 <= amplitude <= 1:
        raise ValueError(f"amplitude={amplitude} requested; must be in [0, 1]")
    omega = 2 * math.pi / period_s

    def rate_at(t: np.ndarray) -> np.ndarray:
        return mean_qps * (1 + amplitude * np.sin(omega * (t + phase_s)))

    return _thinned(rate_at, mean_qps * (1 + amplitude), np.random.default_rng(seed), traffic_class)


def ramp(
    start_qps: float,
    end_qps: float,
    ramp_s: float,
    *,
    shape: str = "linear",
    seed: int = 0,
    traffic_class: str = DEFAULT_CLASS,
) -> Iterator[Arrival]:
    """Poisson whose rate goes from ``start_qps`` to ``end_qps`` over ``ramp_s``, then holds ``end_qps``.

    ``shape`` "linear" interpolates the rate; "exponential" multiplies it by a constant factor per second.
    """
    _positive("start_qps", start_qps)
    _positive("end_qps", end_qps)
    _positive("ramp_s", ramp_s)
    if shape not in ("linear", "exponential"):
        raise ValueError(f"shape={shape!r} requested; must be linear or exponential")

    def rate_at(t: np.ndarray) -> np.ndarray:
        frac = np.minimum(t / ramp_s, 1.0)
        if shape == "linear":
            return start_qps + (end_qps - start_qps) * frac
        return start_qps * (end_qps / start_qps) ** frac

    return _thinned(rate_at, max(start_qps, end_qps), np.random.default_rng(seed), traffic_class)
