"""How much the correlation of queued latencies widens an interval: batch means over the interval log's seconds.

A binomial interval (client/intervals.py) assumes independent latencies. Requests that wait in one queue are
not: a burst of arrivals slows every request behind it, so at high load the share of requests within a bound
swings from second to second far more than independent draws would. In a simulated 10 ms M/D/1 queue at 80 %
load (tests/client/test_batch_means.py), whose p90 is 61 ms, the binomial interval "showed" p90 <= 50 ms met in
15 % of 5.5 s windows instead of at most 2.5 %.

The method is batch means (Law & Kelton, *Simulation Modeling and Analysis*, ch. 9): cut the measured window
into batches (the interval log's whole seconds), count per batch the requests and those within the bound, and
estimate the variance of the pooled share from how the batches' shares scatter (a ratio estimator, as batches
hold different counts). Its ratio to the binomial variance is the **inflation** f: the evidence is worth n / f
independent requests. With b batches the estimate has b - 1 degrees of freedom, so the interval uses Student's
t instead of the normal quantile, folded into f as (t / z)^2. f is never below 1: correlation never makes
evidence stronger than independent draws.

In the same simulation the batches bring that to 1.3 % of one-trial steps (4 % to none of 300 three-trial
ones). Batches shorter than the queue's memory are themselves correlated, so near saturation f can still fall
short; longer steps and more trials narrow what no formula can.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from tailmark.client.compact import Compact


@dataclass(frozen=True, slots=True)
class Inflation:
    factor: float  # >= 1: the binomial variance times this is the share's variance (n / factor requests' worth)
    batches: int  # how many batches it was estimated from

    def effective(self, n: int) -> int:
        """How many independent requests ``n`` correlated ones are worth (at least 1 when n is)."""
        return max(1, math.floor(n / self.factor)) if n else 0

    @property
    def text(self) -> str:
        return f"correlation x{self.factor:.1f} from {self.batches} one-second batches"


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion around the
    normal quantile (Abramowitz & Stegun 26.7.5; at the 97.5 % point within 0.2 % of the exact value from 3
    degrees of freedom)."""
    if df < 1:
        raise ValueError(f"df={df}; must be at least 1")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
    z = NormalDist().inv_cdf(p)
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (i + 1) for i, term in enumerate(terms))


def share_inflation(batches: Sequence[tuple[int, int]], confidence: float = 0.95) -> Inflation | None:
    """The inflation of the pooled share's variance from ``batches`` of (requests, of which within the bound);
    None when fewer than two batches hold requests (nothing to estimate the scatter from)."""
    held = [(n, k) for n, k in batches if n > 0]
    b = len(held)
    if b < 2:
        return None
    total = sum(n for n, _ in held)
    share = sum(k for _, k in held) / total
    mean_n = total / b
    # the ratio estimator's variance: the scatter of each batch's count within about share * its requests
    variance = sum((k - share * n) ** 2 for n, k in held) / (b - 1) / b / mean_n**2
    binomial = share * (1.0 - share) / total
    upper = 1.0 - (1.0 - confidence) / 2.0
    widen = (t_quantile(upper, b - 1) / NormalDist().inv_cdf(upper)) ** 2
    if binomial <= 0.0:  # every request within the bound, or none: the batches cannot scatter either
        return Inflation(1.0, b)
    return Inflation(max(1.0, variance / binomial * widen), b)


def inflation_at(seconds: Sequence[Compact], value_ns: int, confidence: float = 0.95) -> Inflation | None:
    """``share_inflation`` of the share at or below ``value_ns``, from each batch's compact histogram (a bucket
    straddling the value counts as above it, as ``verdict.count_over`` does)."""
    return share_inflation([(s.count, int(s.counts[s.highs <= value_ns].sum())) for s in seconds], confidence)
