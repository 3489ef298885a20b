"""Validity: each rule is a function that returns a ``Check``; a result is VALID iff every check passed.

Rules follow MLPerf LoadGen (min duration, min queries, binomial early stopping, the Server latency bound),
unchanged, plus two of our own: no request may fail, and the client must not have limited the result. Whom a
failure blames (client, host, endpoint) follows the evidence: ``attribution.py`` and docs/verdicts.md.

Latencies come as HdrHistogram objects in nanoseconds. A recorded value is only known to its bucket, so
every rule reads a bucket's *upper* edge (HDR's ``highest_equivalent_value``): a bucket that straddles the
bound counts as over it. With 3 significant digits this errs by at most 0.1 %, always against the result.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client.attribution import Evidence, LagFacts, attribute, cap_explains, host_note
from tailmark.client.check import Check
from tailmark.client.settings import EffectiveSettings, Scenario

CONFIDENCE = 0.99  # LoadGen's early-stopping confidence (d = 0 tolerance)


@dataclass(frozen=True, slots=True)
class Verdict:
    """All checks of one result, the early-stopping percentile estimate, and the attribution's warnings."""

    checks: tuple[Check, ...]
    early_stopping_estimate_ns: int | None = None
    early_stopping_percentile: float = 0.0
    notes: tuple[str, ...] = ()  # warnings with figures that did not change the verdict

    @property
    def valid(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def reasons(self) -> list[str]:
        """One line per failing check: ``name: detail``."""
        return [f"{c.name}: {c.detail}" for c in self.failed]

    @property
    def label(self) -> str:
        return "VALID" if self.valid else "INVALID"

    @property
    def cause(self) -> str | None:
        """Whom the evidence blames: None (VALID), "client", "host", "endpoint" or "length" (too short a run)."""
        failed = {c.name for c in self.failed}
        if "latency_bound" not in {c.name for c in self.checks}:
            failed = {"min_queries" if name == "early_stopping" else name for name in failed}  # a count, no bound
        for cause, names in _CAUSES:
            if failed & names:
                return cause
        return None


# The first match wins: a result the client or the host limited says nothing about the endpoint.
_CAUSES = (
    ("client", {"client_bound", "shards"}),  # shards: a shard of a split load started late or is missing
    ("host", {"host_noise"}),
    ("endpoint", {"latency_bound", "early_stopping", "errors", "ttft_bound", "tpot_bound"}),
    ("length", {"min_duration", "min_queries"}),
)


class LatencyCounts(NamedTuple):
    """What early stopping needs when there is no histogram: queries, and how many were over the bound."""

    total: int
    over: int


# --- reading histograms (bucket upper edges, LoadGen's rank rule) ---


def bucket_bounds(hist: HdrHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower edge, upper edge (ns) and count of every non-empty bucket, in value order.

    Vectorised HdrHistogram ``get_value_from_index`` / ``get_highest_equivalent_value``: calling them per
    bucket in Python costs milliseconds per histogram.
    """
    counts = np.ctypeslib.as_array(hist.counts)
    index = np.flatnonzero(counts).astype(np.int64)
    half_mag, half = hist.sub_bucket_half_count_magnitude, hist.sub_bucket_half_count
    bucket = (index >> half_mag) - 1
    sub = (index & (half - 1)) + half
    first = bucket < 0  # the first bucket spans its whole sub-bucket range
    sub[first] -= half
    bucket[first] = 0
    shift = bucket + hist.unit_magnitude
    lows = sub << shift
    return lows, lows + (np.int64(1) << shift) - 1, counts[index].astype(np.int64)


def buckets(hist: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    """Upper edge (ns) and count of every non-empty bucket, in value order."""
    _, highs, counts = bucket_bounds(hist)
    return highs, counts


def count_over(hist: HdrHistogram, bound_ns: int) -> int:
    """Values recorded above ``bound_ns`` (a bucket straddling the bound counts as over)."""
    edges, counts = buckets(hist)
    return int(counts[edges > bound_ns].sum())


def value_at_rank(hist: HdrHistogram, rank: int) -> int:
    """The ``rank``-th smallest value (1-based), as its bucket's upper edge; 0 for an empty histogram."""
    edges, counts = buckets(hist)
    if not len(counts):
        return 0
    rank = min(max(rank, 1), int(counts.sum()))
    return int(edges[int(np.searchsorted(np.cumsum(counts), rank))])


def percentile_rank(count: int, percentile: float) -> int:
    """LoadGen's rank for a percentile: ``sorted[floor(n * p)]`` (0-based), no interpolation, capped at n."""
    milli = round(percentile * 1000)  # exact integer arithmetic: 99.9 % must not become 99.8999...
    return min(count * milli // 100_000 + 1, count)


def percentile_ns(hist: HdrHistogram, percentile: float) -> int:
    """The percentile of ``hist`` by LoadGen's rank rule; 0 for an empty histogram."""
    return value_at_rank(hist, percentile_rank(hist.get_total_count(), percentile))


# --- early stopping (LoadGen's binomial rule; rules appendix "Early Stopping Criterion") ---


def _log_prob_at_most(n: int, t: int, q: float) -> float:
    """log P(Binomial(n, q) <= t), summed downward from k = t with the pmf ratio (no underflow)."""
    log_top = math.lgamma(n + 1) - math.lgamma(t + 1) - math.lgamma(n - t + 1) + t * math.log(q)
    log_top += (n - t) * math.log1p(-q)
    total, term, odds = 1.0, 1.0, (1.0 - q) / q
    for k in range(t, 0, -1):
        term *= k / (n - k + 1) * odds
        total += term
        if term < total * 1e-17:
            break
    return log_top + math.log(total)


@functools.lru_cache(maxsize=4096)
def min_passing_queries(over: int, percentile: float, confidence: float = CONFIDENCE) -> int:
    """Fewest queries (under + over the bound) that pass early stopping when ``over`` of them were over.

    A query is under the bound with probability p. We want the smallest h (queries under) such that a
    system exactly at p would show at most ``over`` failures in h + over trials with probability <= 1 - c,
    i.e. BetaRegularized(p; h, over + 1) <= 1 - c. p99: 459 with none over, 662 with one.
    """
    q, limit = 1.0 - percentile / 100.0, math.log1p(-confidence)
    # Start where the expected failures equal `over` (about a coin flip, so far from passing): fewer steps,
    # and every evaluation then sums terms that shrink fast.
    lo, hi = 0, max(1, math.ceil(over * (1.0 - q) / q))
    while _log_prob_at_most(hi + over, over, q) > limit:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _log_prob_at_most(mid + over, over, q) > limit:
            lo = mid
        else:
            hi = mid
    return hi + over


def early_stopping_estimate_ns(hist: HdrHistogram, percentile: float, confidence: float = CONFIDENCE) -> int | None:
    """LoadGen's early-stopping percentile estimate: the latency at which the rule would just pass.

    Take the largest t with min_passing_queries(t) <= n, drop the t - 1 slowest queries and report the
    slowest of the rest, ``sorted[n - t]``. None when there are too few queries (n < min_passing_queries(1)).
    """
    n = hist.get_total_count()
    if n < min_passing_queries(1, percentile, confidence):
        return None
    # min_passing_queries grows with t and exceeds t / (1 - p): binary search for the largest t that fits.
    lo, hi = 1, max(1, min(n, math.ceil(n * (1.0 - percentile / 100.0))))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if min_passing_queries(mid, percentile, confidence) <= n:
            lo = mid
        else:
            hi = mid - 1
    return value_at_rank(hist, n - lo + 1)


def early_stopping(
    latencies: HdrHistogram | LatencyCounts,
    percentile: float,
    latency_bound_ns: int,
    confidence: float = CONFIDENCE,
    *,
    failed: int = 0,
) -> Check:
    """Server rule: pass iff queries >= min_passing_queries(#over the bound). Failed requests count as over."""
    if isinstance(latencies, LatencyCounts):
        total, over = latencies
    else:
        total, over = latencies.get_total_count(), count_over(latencies, latency_bound_ns)
    total, over = total + failed, over + failed
    needed = min_passing_queries(over, percentile, confidence)
    detail = f"{total} queries, {over} over {latency_bound_ns / 1e6:g} ms; p{percentile:g} needs >= {needed}"
    if total >= needed:
        return Check("early_stopping", True, detail)
    more = needed - total
    return Check(
        "early_stopping", False, detail, f"Would need at least {more} more queries, all under the bound, to pass"
    )


def early_stopping_count(hist: HdrHistogram, percentile: float, confidence: float = CONFIDENCE) -> Check:
    """SingleStream/MultiStream rule: enough queries for an early-stopping percentile estimate at all."""
    needed = min_passing_queries(1, percentile, confidence)
    n = hist.get_total_count()
    detail = f"{n} queries; a p{percentile:g} estimate needs >= {needed}"
    if n >= needed:
        return Check("early_stopping", True, detail)
    return Check("early_stopping", False, detail, f"Run at least {needed - n} more queries (raise min_duration_s)")


# --- the other rules ---


def min_duration(duration_s: float, min_duration_s: float, *, offline: bool = False) -> Check:
    detail = f"ran {duration_s:.3f} s, minimum {min_duration_s:g} s"
    if duration_s >= min_duration_s:
        return Check("min_duration", True, detail)
    if offline:
        advice = "Raise target_qps (the expected rate) or offline_sample_count so the samples take"
    else:
        advice = "Let the run go on (raise max_duration_s / max_query_count, do not interrupt it) so it lasts"
    return Check("min_duration", False, detail, f"{advice} at least {min_duration_s:g} s")


def min_queries(count: int, min_count: int, *, unit: str = "queries") -> Check:
    detail = f"{count} {unit}, minimum {min_count}"
    if count >= min_count:
        return Check("min_queries", True, detail)
    advice = f"Run at least {min_count - count} more {unit}: raise min_duration_s or the target QPS"
    return Check("min_queries", False, detail, advice)


def latency_bound(hist: HdrHistogram, latency_bound_ns: int, percentile: float = 99.0) -> Check:
    """Server rule: the percentile of intended->done must not exceed the bound."""
    value = percentile_ns(hist, percentile)
    detail = f"p{percentile:g} {value / 1e6:.3f} ms, bound {latency_bound_ns / 1e6:g} ms"
    if hist.get_total_count() and value <= latency_bound_ns:
        return Check("latency_bound", True, detail)
    return Check("latency_bound", False, detail, "Reduce target QPS to improve latency")


def no_errors(errors: Mapping[str, int], query_count: int) -> Check:
    """Failed requests are not latencies: a run with errors does not describe the server's tail."""
    n = sum(errors.values())
    if not n:
        return Check("errors", True, f"0 of {query_count} queries failed")
    by_status = ", ".join(f"{status} {count}" for status, count in sorted(errors.items()) if count)
    detail = f"{n} of {query_count} queries failed ({by_status})"
    return Check("errors", False, detail, "Fix the failing requests or lower the load; timeouts count as errors")


# --- choosing the rules per scenario ---


def judge(
    settings: EffectiveSettings,
    *,
    duration_s: float,
    latency: HdrHistogram,
    send_lag: HdrHistogram | None = None,
    sent_to_done: HdrHistogram | None = None,
    errors: Mapping[str, int] | None = None,
    sample_count: int | None = None,
    client_cpu_pct: float | None = None,
    evidence: Evidence | None = None,
) -> Verdict:
    """The verdict of one scenario (or one traffic class of it).

    ``latency`` is intended->done of the successful queries (ns); ``sent_to_done`` lets the attribution tell
    whether the send lag decides the bound; ``errors`` counts failures by status; ``duration_s`` is the
    measured window as LoadGen measures it (open loop: to the last intended send; closed loop: to the last
    issue; offline: to the last completion); ``sample_count`` defaults to queries x samples_per_query x
    batch_size; ``evidence`` carries the client's CPU, its backlog and the host probe (``client_cpu_pct``
    alone is enough for the closed-loop scenarios).
    """
    errors = errors or {}
    evidence = evidence or Evidence(client_cpu_pct=client_cpu_pct)
    failed = sum(errors.values())
    queries = latency.get_total_count() + failed
    samples = sample_count if sample_count is not None else queries * settings.samples_per_query * settings.batch_size
    pct = settings.early_stopping_percentile
    bound_ns = round(settings.latency_bound_ms * 1e6)
    lag_bound_ns = round(settings.send_lag_bound_ms * 1e6)
    checks = [min_duration(duration_s, settings.min_duration_s, offline=settings.scenario is Scenario.OFFLINE)]
    lag: LagFacts | None = None
    match settings.scenario:
        case Scenario.SINGLE_STREAM | Scenario.MULTI_STREAM:
            checks += [min_queries(queries, settings.min_query_count), early_stopping_count(latency, pct)]
        case Scenario.CONCURRENCY:  # closed loop: latency is sent -> done by definition, and send lag is 0
            checks.append(min_queries(queries, settings.min_query_count))
            if bound_ns:  # optional: the bound's percentile of sent -> done, with LoadGen's early stopping
                bound = latency_bound(latency, bound_ns, pct)
                if not bound.passed:
                    advice = "Lower the concurrency (or add a think time or a rate cap) to improve latency"
                    bound = dataclasses.replace(bound, recommendation=advice)
                checks += [early_stopping(latency, pct, bound_ns, failed=failed), bound]
            else:
                checks.append(early_stopping_count(latency, pct))
        case Scenario.OFFLINE:  # everything is intended at t=0, so send lag says nothing here
            checks.append(min_queries(samples, settings.min_query_count, unit="samples"))
        case Scenario.SERVER | Scenario.POISSON | Scenario.FIXED_INTERVAL | Scenario.TRACE | Scenario.MIXED:
            checks.append(min_queries(queries, settings.min_query_count))
            decides, failed_bound, sent_p = False, False, None
            if bound_ns:  # always for Server; optional for the other open-loop scenarios
                stopping = early_stopping(latency, pct, bound_ns, failed=failed)
                bound = latency_bound(latency, bound_ns, pct)
                failed_bound = not (stopping.passed and bound.passed)
                if sent_to_done is not None and sent_to_done.get_total_count():
                    sent_p = percentile_ns(sent_to_done, pct)
                    sent_pass = sent_p <= bound_ns and early_stopping(sent_to_done, pct, bound_ns, failed=failed).passed
                    decides = sent_pass and failed_bound and not cap_explains(evidence)
                checks += [stopping, bound]
            lag_p99 = percentile_ns(send_lag, 99.0) if send_lag is not None and send_lag.get_total_count() else 0
            lag = LagFacts(lag_p99, lag_bound_ns, decides, sent_p, pct or 99.0, failed_bound, has_bound=bool(bound_ns))
        case _:
            typing.assert_never(settings.scenario)
    attributed, notes = attribute(evidence, settings.client_cpu_bound_pct, lag)
    if lag is not None and lag.bound_failed and any(not c.passed for c in attributed):
        # LoadGen's bound checks still fail, but the endpoint is not the one to fix
        advice = "The client or the host limited this result, not the endpoint: see the client_bound / host_noise check"
        checks = [
            dataclasses.replace(c, recommendation=advice)
            if c.name in ("early_stopping", "latency_bound") and not c.passed
            else c
            for c in checks
        ]
    checks += attributed
    checks.append(no_errors(errors, queries))
    noisy = host_note(evidence, lag_bound_ns)
    if noisy:
        notes.append(noisy)
    estimate = early_stopping_estimate_ns(latency, pct) if pct else None
    return Verdict(tuple(checks), estimate, pct, tuple(notes))
