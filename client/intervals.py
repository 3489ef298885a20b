"""Confidence intervals for percentiles from histogram counts, and how many queries an interval needs.

Distribution-free, from order statistics: of n independent latencies, the number that fall at or below the
true p-th percentile is Binomial(n, p). So the true percentile lies between the l-th and the u-th smallest
values (1-based) with probability ``P(l <= B <= u - 1)``, whatever the latencies' distribution. ``rank_interval``
picks the ranks with at most (1 - confidence) / 2 of that binomial's mass below l and above u - 1 (equal tails,
as Hahn & Meeker and Conover build them), so each interval covers at least its stated confidence. The values
at those ranks are read as the rest of tailmark reads a rank (``verdict.value_at_rank``: the bucket's upper
edge, at most 0.1 % above the value), so ``lo <= the reported percentile <= hi``.

When n is too small for a side (p99 from 100 queries has no rank above it at 95 %), that side is ``None``:
the data cannot bound it.

Example::

    >>> hist = histogram with 10,000 latencies                     # doctest: +SKIP
    >>> percentile_interval(hist, 99.0, 0.95)                      # doctest: +SKIP
    (4_808_703, 5_005_311)                                         # ns: p99 is within these at 95 %
    >>> queries_needed(99.0, confidence=0.95, tail_error=0.1)      # doctest: +SKIP
    38_034
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client.verdict import buckets

DEFAULT_CONFIDENCE = 0.95


class RankInterval(NamedTuple):
    """1-based ranks bracketing a percentile; ``lower`` 0 or ``upper`` n + 1 mean "unbounded on that side"."""

    lower: int
    upper: int
    coverage: float  # the exact probability that the true percentile lies between the two ranks


def _binomial_cdf(n: int, p: float) -> tuple[int, np.ndarray]:
    """(k0, cdf) with ``cdf[i] = P(B <= k0 + i)`` for B ~ Binomial(n, p), over every k with non-negligible mass."""
    mean, sd = n * p, math.sqrt(n * p * (1.0 - p))
    k0 = max(0, math.floor(mean - 12 * sd - 40))
    k1 = min(n, math.ceil(mean + 12 * sd + 40))
    k = np.arange(k0, k1 + 1, dtype=np.float64)
    lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
    log_pmf = math.lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
    if 0.0 < p < 1.0:
        log_pmf += k * math.log(p) + (n - k) * math.log1p(-p)
    else:  # degenerate: all mass on 0 or n
        log_pmf = np.where(k == n * p, 0.0, -np.inf)
    return k0, np.cumsum(np.exp(log_pmf))


@functools.lru_cache(maxsize=1024)  # the same (n, p) comes back for each latency kind of a class
def rank_interval(n: int, percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> RankInterval:
    """The ranks l < u with P(B < l) <= alpha/2 and P(B >= u) <= alpha/2, B ~ Binomial(n, p), alpha = 1 - confidence.

    l is as high and u as low as those bounds allow. ``lower == 0``: no rank is low enough (the interval is
    open below); ``upper == n + 1``: open above.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}; must be between 0 and 1")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile={percentile}; must be between 0 and 100")
    if n <= 0:
        return RankInterval(0, 1, 0.0)
    p, tail = percentile / 100.0, (1.0 - confidence) / 2.0
    k0, cdf = _binomial_cdf(n, p)

    def below(k: int) -> float:  # P(B <= k)
        if k < k0:
            return 0.0
        return 1.0 if k - k0 >= len(cdf) else float(cdf[k - k0])

    # lower: the largest l with P(B <= l - 1) <= tail; upper: the smallest u with 1 - P(B <= u - 1) <= tail
    lower = k0 + int(np.searchsorted(cdf, tail, side="right"))  # first index whose cdf exceeds tail
    lower = lower if below(lower - 1) <= tail else lower - 1
    upper = k0 + int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1
    upper = min(upper, n + 1)
    while upper <= n and 1.0 - below(upper - 2) <= tail:  # rounding at the top of the cdf
        upper -= 1
    lower = max(min(lower, n), 0)
    coverage = below(upper - 1) - below(lower - 1) if lower >= 1 else below(upper - 1)
    return RankInterval(lower, upper, min(coverage, 1.0))


def interval_from_counts(
    edges: np.ndarray, counts: np.ndarray, percentile: float, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[int | None, int | None]:
    """(lo, hi) of a percentile from bucket upper edges and counts (value order); None: unbounded on that side."""
    return interval_worth(edges, counts, percentile, int(counts.sum()), confidence)


def interval_worth(
    edges: np.ndarray, counts: np.ndarray, percentile: float, worth: int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[int | None, int | None]:
    """(lo, hi) as ``interval_from_counts``, for n correlated latencies worth ``worth`` <= n independent ones
    (client/batch_means.py): the ranks of a ``worth``-sized sample, scaled to n outwards, so it is wider."""
    n = int(counts.sum())
    if not n or worth < 1:
        return None, None
    worth = min(worth, n)
    ranks = rank_interval(worth, percentile, confidence)
    cumulative = np.cumsum(counts)

    def at(rank: int) -> int:
        return int(edges[int(np.searchsorted(cumulative, rank))])

    lo = at(math.floor(ranks.lower * n / worth)) if ranks.lower >= 1 else None
    hi = at(math.ceil(ranks.upper * n / worth)) if ranks.upper <= worth else None
    return lo, hi


def percentile_interval(
    hist: HdrHistogram, percentile: float, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[int | None, int | None]:
    """(lo, hi) in the histogram's unit (bucket upper edges); None where n cannot bound that side."""
    edges, counts = buckets(hist)
    return interval_from_counts(edges, counts, percentile, confidence)


def tail_shares(n: int, percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The interval's ends as percentiles of the sample: (100 * l / n, 100 * u / n)."""
    ranks = rank_interval(n, percentile, confidence)
    return 100.0 * ranks.lower / n, 100.0 * ranks.upper / n


def queries_needed(percentile: float, *, confidence: float = DEFAULT_CONFIDENCE, tail_error: float = 0.1) -> int:
    """The fewest queries whose interval on ``percentile`` stays within the sample's own percentiles
    ``100 - (100 - p)(1 ± tail_error)``: for p99 and tail_error 0.1, between the sample's p98.9 and p99.1.

    That is a width in ranks, so it holds whatever the latency distribution: the tail above the interval's
    ends holds 1 % ± 10 % of the queries. Found by bisection; discreteness can make a handful of smaller n
    pass as well.
    """
    if not 0.0 < percentile < 100.0:
        raise ValueError(f"percentile={percentile}; must be between 0 and 100 (exclusive)")
    if not 0.0 < tail_error < 1.0:
        raise ValueError(f"tail_error={tail_error}; must be between 0 and 1")
    share = 1.0 - percentile / 100.0
    low_pct = 100.0 * (1.0 - share * (1.0 + tail_error))
    high_pct = 100.0 * (1.0 - share * (1.0 - tail_error))

    def narrow_enough(n: int) -> bool:
        ranks = rank_interval(n, percentile, confidence)
        return (
            ranks.lower >= 1
            and ranks.upper <= n
            and 100.0 * ranks.lower / n >= low_pct
            and (100.0 * ranks.upper / n <= high_pct)
        )

    # normal approximation for a start: half-width z * sqrt(n p q) ranks <= tail_error * q * n
    z = math.sqrt(2.0) * _erfinv(confidence)
    guess = max(int(z * z * (1.0 - share) / (tail_error * tail_error * share)), 2)
    high = guess
    while not narrow_enough(high):
        high *= 2
    low = max(high // 4, 1)
    while low < high:
        mid = (low + high) // 2
        if narrow_enough(mid):
            high = mid
        else:
            low = mid + 1
    return high


def _erfinv(y: float) -> float:
    """Inverse error function by Newton's method (no scipy in the client install)."""
    x = 0.0
    for _ in range(60):
        err = math.erf(x) - y
        if abs(err) < 1e-15:
            break
        x -= err / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return x
