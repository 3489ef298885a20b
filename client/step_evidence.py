"""The evidence of one ``tailmark search`` step: whether its trials meet each objective (client/slo.py).

**A step** is one rate, run as ``--trials K`` repeats of the Server scenario (one ``tailmark run --repeat K``
in its own run directory, through sweep's step runner) with fresh seeds: step n, trial k uses the seeds plus
K (n - 1) + k - 1. Its trials' intended -> done histograms are added (bucket by bucket, lossless) and each
objective is:

- **shown met** when the pooled evidence says so: for a percentile, the upper end of its distribution-free
  95 % interval (client/intervals.py) is at most the bound; for goodput, the one-sided binomial p-value of
  "the true share within T is at most f" is at most 0.025 (the 97.5 % side the interval's upper end gives);
- **shown missed** when the interval lies above the bound (goodput: the p-value of "at least f" <= 0.025);
- **undecided** otherwise: the interval holds the bound, or is open (too few queries to bound a p99).

Requests that queue are correlated, so the pooled requests count for fewer independent ones: the trials'
whole seconds in the step's interval log are batches whose scatter gives the variance inflation
(client/batch_means.py), and the interval and p-value use n / inflation requests. Under two such seconds,
nothing is shown.

The step passes when every objective is shown met, or is undecided and met by a majority of the trials (each
trial's own percentile, LoadGen's rank rule on bucket upper edges, or goodput), and no request failed (goodput
alone counts failures as misses instead). ``--strict`` passes only what is shown met *and* met by a majority
of trials: with short steps it needs the p99 bounded, which pushes the answer down (a 5 s step at 50/s cannot
bound a p99 below its maximum). Each objective's pooled value, interval and p-value are recorded per step.

The runs' own verdicts judge the first objective (LoadGen's bound and early stopping) and stay in each step's
run directory; a trial blamed on the **client** stops the search, and so does a majority blamed on the
**host** twice in a row (the step is run once more first): the endpoint is then not what limits the rate
(docs/verdicts.md). A host-blamed step whose SLO is shown missed is a fail, not a stop: the rate is too high
either way.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailmark.client.slo import Objective

ONE_SIDED_ALPHA = 0.025  # the upper end of a two-sided 95 % interval
STOP_CAUSES = ("client", "host")
RULE = (
    "each objective is shown met when the pooled trials' 95 % interval of its percentile lies at or below the bound "
    "(goodput: one-sided binomial p-value <= 0.025), missed when it lies above, else undecided, the requests counted "
    "for what the scatter of their one-second batches shows them worth; a step passes when "
    "every objective is shown met, or undecided with a majority of trials meeting it (--strict: shown met and a "
    "majority of trials meeting every objective), no request failed (goodput alone counts failures as misses) and "
    "no trial is blamed on the client, nor a majority on the host"
)


@dataclass(frozen=True, slots=True)
class ObjectiveEvidence:
    objective: str
    trial_values: list[float | None]  # each trial's percentile (ms) or goodput share
    trials_met: int
    pooled_queries: int  # the pooled trials' requests (goodput: failures included)
    pooled_within: int  # of which done within the bound (a bucket straddling it counts as over)
    worth_queries: int  # what they are worth as independent requests, after their correlation (batch_means.py)
    correlation: float | None  # the variance inflation that says so; None: not estimated (independence assumed)
    pooled_value: float | None  # the pooled percentile (ms) or goodput share
    interval_ms: list[float | None] | None  # percentile: its 95 % interval from the pooled counts; None: goodput
    # P(Binomial(worth, share) >= within scaled to worth): the chance of this much evidence if the objective is missed
    p_value: float
    shown: str  # what the pooled trials show: met | missed | undecided (the interval holds the bound)
    passed: bool  # the objective's decision: shown, else (default rule) a majority of trials
    detail: str


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What a step's trials say; ``walk`` reads ``passed`` and ``limited_by``."""

    passed: bool
    limited_by: str | None = None  # client | host: the endpoint is not what limits this rate
    why: str = ""
    trials: int = 0
    trials_passed: int = 0
    achieved_qps: float | None = None
    causes: list[str | None] = field(default_factory=list)
    objectives: list[ObjectiveEvidence] = field(default_factory=list)
    ceiling_qps: float | None = None  # the client's calibrated ceiling, when this step measured it
    run_dir: str = ""


def upper_tail(n: int, share: float, k: int) -> float:
    """P(B >= k) for B ~ Binomial(n, share), summed exactly in log space."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(share), math.log1p(-share)
    head = math.lgamma(n + 1)
    terms = [head - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def judge_objective(
    objective: Objective,
    trials: list[tuple[Any, int]],
    *,
    batches: list[Any] | None = None,
    strict: bool = False,
    confidence: float = 0.95,
) -> ObjectiveEvidence:
    """One objective over a step's trials: ``trials`` holds each trial's intended -> done histogram (ns) and its
    failed-request count; ``batches`` the trials' whole seconds of the interval log (compact histograms,
    client/compact.py), whose scatter says what the pooled requests are worth (client/batch_means.py; None:
    independent requests, as for a synthetic histogram; fewer than two: nothing can be shown). It passes when
    the pooled trials show it met, or (not ``strict``) when they show neither met nor missed and a majority of
    trials meet it."""
    from tailmark.client import hlog
    from tailmark.client.batch_means import inflation_at
    from tailmark.client.goodput import requests_within
    from tailmark.client.intervals import interval_worth
    from tailmark.client.verdict import buckets, percentile_ns

    bound_ns = int(objective.bound_ms * 1e6)
    share = objective.percentile / 100.0
    values: list[float | None] = []
    met = 0
    pooled = hlog.new_histogram()
    failed = 0
    for hist, errors in trials:
        hlog.add_into(pooled, hist)
        failed += errors
        n = hist.get_total_count()
        if objective.goodput:
            total = n + errors
            value = requests_within(hist, bound_ns) / total if total else None
            met += value is not None and value >= share
        else:
            value = percentile_ns(hist, objective.percentile) / 1e6 if n else None
            met += value is not None and value <= objective.bound_ms
        values.append(value)
    ok = pooled.get_total_count()
    within = requests_within(pooled, bound_ns)
    n = ok + failed if objective.goodput else ok
    inflation = None if batches is None else inflation_at(batches, bound_ns, confidence)
    worth = n if batches is None else 0 if inflation is None else inflation.effective(n)
    worth_within = round(within * worth / n) if n else 0  # the same share, of fewer independent requests
    p_value = upper_tail(worth, share, worth_within) if worth else 1.0
    p_missed = 1.0 - upper_tail(worth, share, worth_within + 1) if worth else 1.0  # P(B <= within): missed
    interval = None
    if objective.goodput:
        pooled_value = within / n if n else None
        shown = (
            "met" if worth and p_value <= ONE_SIDED_ALPHA else "missed" if worth and p_missed <= ONE_SIDED_ALPHA else ""
        )
        value_text = "-" if pooled_value is None else f"{pooled_value:.4f}"
        detail = f"goodput {value_text} of {n} within {objective.bound_ms:g} ms, p={p_value:.3g}"
    else:
        pooled_value = percentile_ns(pooled, objective.percentile) / 1e6 if ok else None
        edges, counts = buckets(pooled)
        lo, hi = interval_worth(edges, counts, objective.percentile, worth, confidence) if ok else (None, None)
        interval = [None if v is None else v / 1e6 for v in (lo, hi)]
        if interval[1] is not None and interval[1] <= objective.bound_ms:
            shown = "met"
        else:
            shown = "missed" if interval[0] is not None and interval[0] > objective.bound_ms else ""
        ends = "..".join("?" if v is None else f"{v:.2f}" for v in interval)
        detail = f"p{objective.percentile:g} {ms_text(pooled_value)} [{ends}] ms of {n}, p={p_value:.3g}"
        if ok and worth and interval[1] is None:
            detail += " (too few queries to bound it)"
    if inflation is not None and inflation.factor > 1.0:
        detail += f" ({inflation.text}: worth {worth} independent requests)"
    elif batches is not None and inflation is None and n:
        detail += " (under two one-second batches: their correlation unknown, nothing shown)"
    shown = shown or "undecided"
    passed = shown == "met" or (not strict and shown == "undecided" and 2 * met > len(trials))
    detail += f": {shown}" + (f", {met}/{len(trials)} trials met it" if shown == "undecided" else "")
    return ObjectiveEvidence(
        objective=objective.name, trial_values=values, trials_met=met, pooled_queries=n, pooled_within=within,
        worth_queries=worth, correlation=None if inflation is None else round(inflation.factor, 3),
        pooled_value=pooled_value, interval_ms=interval, p_value=p_value, shown=shown, passed=passed, detail=detail,
    )  # fmt: skip


def judge_step(
    objectives: list[Objective],
    doc: dict[str, Any],
    histograms: dict[str, Any],
    *,
    batches: list[Any] | None = None,
    strict: bool = False,
) -> StepOutcome:
    """A step's outcome from its results.json (``doc``), histograms.json (``histograms``) and the trials' whole
    seconds of intended -> done from its interval log (``batches``, ``step_batches``): every objective
    passes (``judge_objective``), no request failed (unless goodput alone is asked: it counts failures as
    misses), no trial blamed on the client and no majority on the host; ``strict`` also needs a majority of
    trials meeting every objective and every objective shown met by the pooled trials."""
    from tailmark.client.recorder import Recorder, scenario_keys

    recorder = Recorder.from_dict(histograms)
    entries = doc["scenarios"]
    names = scenario_keys(e["scenario"] for e in entries)
    trials = []
    for name in names:
        key = (name, "all")
        hist = recorder.histogram(key, "intended_to_done")
        trials.append((hist, sum(recorder.errors(key).values())))
    classes = [e["classes"]["all"] for e in entries]
    causes = [c["verdict"].get("cause") for c in classes]
    evidence = [judge_objective(o, trials, batches=batches, strict=strict) for o in objectives]
    passing = []
    for i, c in enumerate(classes):
        meets = all(_trial_meets(o, e.trial_values[i]) for o, e in zip(objectives, evidence, strict=True))
        passing.append(meets and c["error_count"] == 0 and causes[i] not in STOP_CAUSES)
    k, count = sum(passing), len(passing)
    failed = sum(errors for _, errors in trials)
    errors_fail = failed > 0 and not all(o.goodput for o in objectives)
    passed = all(e.passed for e in evidence) and not errors_fail and (not strict or 2 * k > count)
    limited = "client" if "client" in causes else "host" if 2 * causes.count("host") > count else None
    reasons = [f"{k}/{count} trials met every objective"] + [e.detail for e in evidence]
    if limited == "host" and any(e.shown == "missed" for e in evidence):
        # too high a rate either way: the SLO is missed beyond the interval, by the endpoint or by this host
        reasons.append("the verdict blames the host, but the SLO is shown missed: a fail, not a stop")
        limited = None
    if errors_fail:
        reasons.append(f"{failed} requests failed")
    if limited:
        reasons.insert(0, f"{causes.count(limited)}/{count} trials blamed on the {limited}")
    ceiling = (doc.get("calibration") or {}).get("ceiling_qps")
    return StepOutcome(
        passed=passed and limited is None, limited_by=limited, why="; ".join(reasons), trials=count,
        trials_passed=k, achieved_qps=statistics.median([c["achieved_rate_qps"] for c in classes]) if classes else None,
        causes=causes, objectives=evidence, ceiling_qps=ceiling,
    )  # fmt: skip


def step_batches(step_dir: Path, doc: dict[str, Any]) -> list[Any]:
    """The trials' whole one-second intervals of intended -> done inside their measured windows (every class
    added, compact), read from the step's ``latency.hlog``: the batches ``judge_objective`` estimates
    correlation from."""
    from tailmark.client.recorder import scenario_keys
    from tailmark.client.timeline import FILE_NAME, in_window, read_slices

    slices = read_slices(step_dir / FILE_NAME)
    out = []
    for name, entry in zip(scenario_keys(e["scenario"] for e in doc["scenarios"]), doc["scenarios"], strict=True):
        window = (entry.get("evidence") or {}).get("window_in_log_s")
        if window is not None:  # results from before the window was recorded: no batches, nothing shown
            out += [s.histogram for s in in_window(slices.get(name, []), window)]
    return out


def _trial_meets(objective: Objective, value: float | None) -> bool:
    if value is None:
        return False
    return value >= objective.percentile / 100.0 if objective.goodput else value <= objective.bound_ms


def ms_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"
