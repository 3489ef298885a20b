"""Repeated trials: the scenario list run K times with fresh seeds, and the median and spread of each number.

``tailmark run --repeat K`` runs the whole list of scenarios K times in a row. Repeat k (1-based) uses the
requested seeds plus k - 1 (``schedule_seed`` and ``sample_seed``), so repeat 1 is the run without ``--repeat``
and every repeat's seeds are in its settings. Each repeat's scenarios are kept in results.json as they are
(``scenarios``, in the order run, each with its ``repeat`` number), and ``repeats`` adds, per scenario of the
list: how many repeats finished and how many were VALID, and the median, min and max of the achieved rate and of
each percentile of intended → done over them, and perf_analyzer's stability check over the last 3 repeats: max/min
of the rate, and of p99, at most 1.10 (client/stability.py's rule, which also judges windows within one run).

One short run's p99 can move tenfold on a shared host (docs/verdicts.md); the spread over repeats says how far
to trust one number, and ``tailmark compare`` tests two sets of repeats against each other.

Example::

    >>> summarize(doc["scenarios"], count=3)[0]                   # doctest: +SKIP
    {'scenario': 'server', 'repeats': 3, 'valid': 2, 'seeds': [[..], ..],
     'throughput_qps': {'median': 149.8, 'min': 149.1, 'max': 150.3},
     'latency_ms': {'p99': {'median': 4.1, 'min': 3.9, 'max': 11.2}, ...}}
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

from tailmark.client.stability import steady

if TYPE_CHECKING:
    from tailmark.client.results import ScenarioDoc
    from tailmark.client.settings import EffectiveSettings

PERCENTILE_KEYS = ("p50", "p90", "p95", "p97", "p99", "p99_9")
STABILITY_PCT = 10.0  # perf_analyzer's --stability-percentage default
STABILITY_LAST = 3  # perf_analyzer judges the last 3 measurements


class SpreadDoc(TypedDict):
    median: float | None
    min: float | None
    max: float | None


class StabilityDoc(TypedDict):
    tolerance_pct: float
    last: int  # how many of the last repeats are judged
    stable: bool | None  # None: fewer repeats than ``last``
    detail: str


class RepeatSummaryDoc(TypedDict):
    scenario: str
    repeats: int  # finished repeats of this scenario
    valid: int  # of which VALID
    seeds: list[list[int]]  # [schedule_seed, sample_seed] of each repeat
    throughput_qps: SpreadDoc  # achieved rate of "all"
    latency_ms: dict[str, SpreadDoc]  # intended -> done of "all": p50 .. p99_9
    stability: StabilityDoc | None  # perf_analyzer's check over the last repeats; older files lack it


class RepeatsDoc(TypedDict):
    count: int  # repeats asked for
    scenarios_per_repeat: int
    summary: list[RepeatSummaryDoc]


def repeat_plan(scenarios: Sequence[EffectiveSettings], count: int) -> list[EffectiveSettings]:
    """The scenario list ``count`` times; repeat k's seeds are the requested ones plus k - 1."""
    if count < 1:
        raise ValueError(f"repeat={count}; must be >= 1")
    return [
        dataclasses.replace(s, schedule_seed=s.schedule_seed + k, sample_seed=s.sample_seed + k)  # type: ignore[operator]
        for k in range(count)
        for s in scenarios
    ]


def repeat_number(index: int, scenarios_per_repeat: int) -> int:
    """The 1-based repeat of the ``index``-th scenario run."""
    return index // scenarios_per_repeat + 1


def spread(values: Sequence[float | None]) -> SpreadDoc:
    known = [v for v in values if v is not None]
    if not known:
        return SpreadDoc(median=None, min=None, max=None)
    return SpreadDoc(median=float(statistics.median(known)), min=float(min(known)), max=float(max(known)))


def summarize(scenarios: Sequence[ScenarioDoc], *, count: int, scenarios_per_repeat: int) -> RepeatsDoc:
    """Per scenario of the list, over its finished repeats: VALID count, median and spread of rate and percentiles."""
    summary = []
    for j in range(min(scenarios_per_repeat, len(scenarios))):
        runs = list(scenarios[j::scenarios_per_repeat])
        totals = [s["classes"]["all"] for s in runs]
        latency = {
            key: spread([t["latency_ms"]["intended_to_done"][key] for t in totals])  # type: ignore[literal-required]
            for key in PERCENTILE_KEYS
        }
        seeds = [[s["settings"]["effective"]["schedule_seed"], s["settings"]["effective"]["sample_seed"]] for s in runs]
        summary.append(
            RepeatSummaryDoc(
                scenario=runs[0]["scenario"],
                repeats=len(runs),
                valid=sum(s["result"] == "VALID" for s in runs),
                seeds=seeds,
                throughput_qps=spread([t["achieved_rate_qps"] for t in totals]),
                latency_ms=latency,
                stability=stability(
                    [t["achieved_rate_qps"] for t in totals],
                    [t["latency_ms"]["intended_to_done"]["p99"] for t in totals],
                ),
            )
        )
    return RepeatsDoc(count=count, scenarios_per_repeat=scenarios_per_repeat, summary=summary)


def stability(
    rates: Sequence[float | None],
    p99s: Sequence[float | None],
    *,
    tolerance_pct: float = STABILITY_PCT,
    last: int = STABILITY_LAST,
) -> StabilityDoc:
    """perf_analyzer's stability rule over repeats: over the last ``last`` repeats, max/min of the rate and of p99
    each at most 1 + ``tolerance_pct``/100 (a repeat without a value is not stable)."""
    if len(rates) < last:
        detail = f"{len(rates)} repeats; stability needs {last}"
        return StabilityDoc(tolerance_pct=tolerance_pct, last=last, stable=None, detail=detail)
    moving = []
    for label, values, unit in (("rate", rates[-last:], "/s"), ("p99", p99s[-last:], " ms")):
        known = [v for v in values if v is not None]
        if len(known) < last or not steady(known, tolerance_pct):
            shown = "..".join(
                "-" if v is None else f"{v:.3g}" for v in (min(known, default=None), max(known, default=None))
            )
            moving.append(f"{label} {shown}{unit}")
    limit = f"max/min within {1 + tolerance_pct / 100:g}"
    detail = f"stable: the rate and p99 of the last {last} repeats, {limit}"
    if moving:
        detail = f"not stable: over the last {last} repeats {', '.join(moving)}, beyond {limit}"
    return StabilityDoc(tolerance_pct=tolerance_pct, last=last, stable=not moving, detail=detail)


def _range(s: SpreadDoc, digits: int) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def summary_lines(repeats: RepeatsDoc) -> list[str]:
    """The console's repeat summary: one line per scenario, median (min..max)."""
    lines = ["", f"over {repeats['count']} repeats: median (min..max)"]
    for entry in repeats["summary"]:
        lat = entry["latency_ms"]
        lines.append(
            f"  {entry['scenario']}: {entry['valid']} of {entry['repeats']} VALID; "
            f"rate/s {_range(entry['throughput_qps'], 1)}; p50 ms {_range(lat['p50'], 3)}; "
            f"p99 ms {_range(lat['p99'], 3)}; p99.9 ms {_range(lat['p99_9'], 3)}"
        )
        if entry.get("stability") and entry["stability"]["stable"] is not None:  # type: ignore[union-attr]
            lines.append(f"    {entry['stability']['detail']}")  # type: ignore[index]
    return lines
