"""Goodput: requests per second that met their own SLO. The one definition; results and ``tailmark search`` use it.

A request meets its SLO when it succeeded and its intended -> done latency is at most the per-request bound.
Failed requests (errors, timeouts) are misses. A request's bound is, first match wins:

1. its traffic class's ``request_slo`` in a mixed run file, else that class's ``slo`` bound;
2. the scenario's ``request_slo_ms`` (``--request-slo 100ms``), which defaults to its latency bound;
3. its own deadline (a trace's ``deadline`` column, a class's ``deadline``): the client enforces a deadline as
   the request's timeout, so an answered request met it and a late one failed with DEADLINE_EXCEEDED.

A bound and a deadline both apply when both are given. A class with neither has no goodput (``None``).
Latencies are read from the histogram like every verdict rule (``verdict.count_over``): a bucket that
straddles the bound counts as over it, so goodput errs low by at most 0.1 % of the bound, never high.

Example::

    >>> from tailmark.client import hlog
    >>> h = hlog.new_histogram()
    >>> for ms in (5, 5, 5, 80):
    ...     h.record_value(ms * 1_000_000)
    >>> requests_within(h, 50_000_000)
    3
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

from hdrh.histogram import HdrHistogram

from tailmark.client.verdict import count_over


class GoodputDoc(TypedDict):
    slo_ms: float | None  # the per-request bound; None: only the requests' own deadlines
    deadline_count: int  # requests that carried their own deadline (enforced as their timeout)
    good_count: int  # requests that succeeded within their SLO
    query_count: int  # requests counted: succeeded + failed
    share: float | None  # good_count / query_count
    rate_per_s: float  # good_count over the scenario's measured window
    classes: list[str]  # the traffic classes counted ("all": those with an SLO)


class TokenGoodputDoc(TypedDict):
    """A generative class's goodput (its ``tokens.goodput``): the same counts as ``GoodputDoc``, judged per request
    on its token timings (client/token_metrics.py ``good_count``) instead of one latency bound."""

    slo_ms: dict[str, float]  # the SLOs given, by metric: "ttft", "tpot", "e2e" (intended -> last byte)
    good_count: int  # requests that met every SLO given
    query_count: int  # requests counted: answered + failed (a failure misses every SLO)
    share: float | None  # good_count / query_count
    rate_per_s: float | None  # good_count over the scenario's measured window


def token_goodput(slo_ms: dict[str, float], good: int, failed: int, answered: int, duration_s: float):
    """``TokenGoodputDoc`` for ``good`` of ``answered`` + ``failed`` requests."""
    asked = answered + failed
    return TokenGoodputDoc(
        slo_ms=slo_ms, good_count=good, query_count=asked, share=round(good / asked, 6) if asked else None,
        rate_per_s=round(good / duration_s, 3) if duration_s > 0 else None,
    )  # fmt: skip


def requests_within(hist: HdrHistogram, bound_ns: int) -> int:
    """Successful requests (``hist``: their intended -> done, ns) at most ``bound_ns``; 0: no bound, all of them."""
    n = hist.get_total_count()
    return n - count_over(hist, bound_ns) if bound_ns and n else n


def class_goodput(
    name: str, latency: HdrHistogram, failed: int, *, slo_ms: float, deadline_count: int, duration_s: float
) -> GoodputDoc | None:
    """One class's goodput; None when it has no SLO (no bound and no request with a deadline)."""
    if not slo_ms and not deadline_count:
        return None
    good = requests_within(latency, round(slo_ms * 1e6))
    return _doc(slo_ms or None, deadline_count, good, latency.get_total_count() + failed, duration_s, [name])


def total_goodput(docs: Iterable[GoodputDoc | None], duration_s: float) -> GoodputDoc | None:
    """The "all" view: the classes that have an SLO, each counted against its own; None if none has one."""
    counted = [d for d in docs if d is not None]
    if not counted:
        return None
    bounds = {d["slo_ms"] for d in counted}
    return _doc(
        bounds.pop() if len(bounds) == 1 else None, sum(d["deadline_count"] for d in counted),
        sum(d["good_count"] for d in counted), sum(d["query_count"] for d in counted), duration_s,
        [name for d in counted for name in d["classes"]],
    )  # fmt: skip


def _doc(
    slo_ms: float | None, deadlines: int, good: int, total: int, duration_s: float, classes: list[str]
) -> GoodputDoc:
    return GoodputDoc(
        slo_ms=slo_ms, deadline_count=deadlines, good_count=good, query_count=total,
        share=good / total if total else None, rate_per_s=good / duration_s if duration_s > 0 else 0.0,
        classes=classes,
    )  # fmt: skip
