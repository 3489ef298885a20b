"""Results: one object per scenario built from histograms, and the versioned results.json schema.

The schema is declared once, as the TypedDicts below; ``validate`` walks them, and both ``RunResult.write``
(before writing) and ``load_results`` (after reading) call it, so the writer cannot drift from the reader.
Latencies are in ms in the file; histograms are in ns. Formatting for people lives in ``report.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client import hlog
from tailmark.client.compact import Compact
from tailmark.client.errors import TailmarkError
from tailmark.client.evidence import ScenarioEvidence
from tailmark.client.goodput import GoodputDoc, class_goodput, total_goodput
from tailmark.client.repeat import RepeatsDoc, repeat_number, summarize
from tailmark.client.settings import CLOSED_LOOP, EffectiveSettings, Scenario
from tailmark.client.verdict import Verdict, bucket_bounds, buckets, judge, percentile_ns, percentile_rank

SCHEMA_VERSION = 1
PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)  # LoadGen's reported set
LATENCIES = ("intended_to_done", "sent_to_done", "send_lag")
ALL = "all"  # the aggregate of every traffic class
_PERCENTILE_KEYS = ("p50", "p90", "p95", "p97", "p99", "p99_9")


class ResultsError(TailmarkError):
    """A results file is missing, not JSON, of another schema version, or lacks a required key."""


# --- the schema (declared once; see validate) ---


class LatencyDoc(TypedDict):
    count: int
    min: float | None
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p97: float | None
    p99: float | None
    p99_9: float | None
    max: float | None
    distribution: list[list[float]]  # [percentile, ms] points for HDR-style plots


class CheckDoc(TypedDict):
    name: str
    passed: bool
    detail: str
    recommendation: str


class VerdictDoc(TypedDict):
    result: str  # VALID | INVALID
    valid: bool
    checks: list[CheckDoc]
    early_stopping_percentile: float
    early_stopping_estimate_ms: float | None
    cause: str | None  # whom a failure blames: client, host, endpoint, length; None when VALID


class IntervalsDoc(TypedDict):
    confidence: float
    latency_ms: dict[str, dict[str, list[float | None]]]  # latency -> "p99" -> [lo, hi]; None: n cannot bound it
    # latency -> "p99" -> the variance inflation f its one-second batches showed (client/batch_means.py): the
    # interval is that of n / f independent latencies; None: not estimated, independence assumed (a merge, a run
    # under two seconds); the key is missing in files from before it
    correlation: dict[str, dict[str, float | None]] | None


class ClassDoc(TypedDict):
    traffic_class: str
    query_count: int  # completed: ok + failed
    ok_count: int
    error_count: int
    sample_count: int
    duration_s: float
    offered_rate_qps: float | None  # None: closed loop, or not known
    achieved_rate_qps: float
    sample_rate_per_s: float
    latency_ms: dict[str, LatencyDoc]  # intended_to_done, sent_to_done, send_lag
    errors: dict[str, int]  # by gRPC status name
    overflow_count: int  # latencies above the histogram's range, clamped to its top
    verdict: VerdictDoc
    intervals: IntervalsDoc | None  # each percentile's confidence interval (client/intervals.py); older files lack it
    tokens: dict[str, Any] | None  # generative answers' token timings (client/token_metrics.tokens_doc); optional
    goodput: GoodputDoc | None  # requests/s that met their SLO (client/goodput.py); None: no SLO; older files lack it
    cancelled_count: int | None  # requests the client cancelled on purpose (client/cancellation.py); optional


class MetricSeriesDoc(TypedDict):
    name: str
    labels: dict[str, str]
    kind: str  # counter | gauge
    first: float | None  # at the scenario's first scrape (before its first request)
    last: float | None  # at its last scrape (after its last answer)
    min: float | None  # min, max and mean over the scrapes inside the measured window
    max: float | None
    mean: float | None
    increase: float | None  # counters: last - first, the whole scenario (warm-up included)
    rate_per_s: float | None  # counters: the mean rate over the window (values between scrapes: linear)


class ServerMetricsDoc(TypedDict):
    url: str
    interval_s: float
    scrapes: int
    failed_scrapes: int
    error: str | None  # the last failure (or why the run went without metrics)
    series: list[MetricSeriesDoc]


class ScenarioDoc(TypedDict):
    scenario: str
    result: str
    settings: dict[str, Any]  # EffectiveSettings.to_dict(): mlperf, effective, requested
    duration_s: float
    client_cpu_pct: float | None
    warnings: list[str]
    throughput_per_s: list[int]  # completions in each second of the window (may be empty)
    classes: dict[str, ClassDoc]  # "all" first
    server_stats: dict[str, Any] | None  # the server's ModelStatistics over the scenario; None: not offered
    evidence: dict[str, Any] | None  # the client's and the host's side of the window (ScenarioEvidence.to_dict)
    repeat: int | None  # which repeat of --repeat this is (1-based); absent when the run was not repeated
    server_metrics: ServerMetricsDoc | None  # the endpoint's scraped /metrics (client/metrics_scrape.py); optional
    sessions: dict[str, Any] | None  # multi-turn sessions' counts and per-turn tokens (client/sessions.py); optional


class ResultsDoc(TypedDict):
    schema_version: int
    created_at: str
    updated_at: str
    complete: bool  # false until the run ends: a partial file is still usable
    interrupted: str | None  # why the run stopped early
    environment: dict[str, Any]
    calibration: dict[str, Any] | None  # what this client can do on this host (client/calibration.py)
    scenarios: list[ScenarioDoc]
    repeats: RepeatsDoc | None  # --repeat K: median and spread per scenario (client/repeat.py); None: not repeated


def validate(value: Any, hint: Any = ResultsDoc, where: str = "results") -> None:
    """Check ``value`` against a schema type; raise ``ResultsError`` naming the first bad key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            raise ResultsError(f"{where}: expected an object, got {type(value).__name__}")
        for key, sub in typing.get_type_hints(hint).items():
            if key not in value:
                if type(None) in typing.get_args(sub):  # optional: files from before the key existed
                    continue
                raise ResultsError(f"{where}: missing key {key!r}")
            validate(value[key], sub, f"{where}.{key}")
    elif origin is types.UnionType or origin is typing.Union:
        errors = []
        for option in args:
            try:
                return validate(value, option, where)
            except ResultsError as exc:
                errors.append(str(exc))
        raise ResultsError(errors[-1])
    elif origin is list:
        if not isinstance(value, list):
            raise ResultsError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            validate(item, args[0], f"{where}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            raise ResultsError(f"{where}: expected an object, got {type(value).__name__}")
        for key, item in value.items():
            validate(item, args[1], f"{where}.{key}")
    elif hint is type(None):
        if value is not None:
            raise ResultsError(f"{where}: expected null, got {type(value).__name__}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ResultsError(f"{where}: expected a number, got {type(value).__name__}")
    elif isinstance(value, bool) is not (hint is bool) or not isinstance(value, hint):
        raise ResultsError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")


# --- statistics from one histogram ---


def _ms(ns: float) -> float:
    return round(ns / 1e6, 6)


def _distribution_points(count: int) -> list[float]:
    """Percentiles at four ticks per halving of (1 - p), down to one query, then 100."""
    points, i = [], 0
    while True:
        tail = 0.5 ** (i / 4)
        if tail * count < 1:
            break
        points.append(100.0 * (1.0 - tail))
        i += 1
    return [*points, 100.0]


def latency_summary(hist: HdrHistogram) -> LatencyDoc:
    """min, mean, LoadGen-rank percentiles and max of a ns histogram, in ms (bucket upper edges)."""
    lows, edges, counts = bucket_bounds(hist)
    n = int(counts.sum())
    if not n:
        empty = dict.fromkeys(("min", "mean", "p50", "p90", "p95", "p97", "p99", "p99_9", "max"))
        return LatencyDoc(count=0, distribution=[], **empty)  # type: ignore[typeddict-item]
    cumulative = np.cumsum(counts)

    def at(pct: float) -> float:
        rank = percentile_rank(n, pct) if pct < 100 else n
        return _ms(int(edges[int(np.searchsorted(cumulative, rank))]))

    keys = ("p50", "p90", "p95", "p97", "p99", "p99_9")
    return LatencyDoc(
        count=n,
        min=_ms(int(lows[0])),  # lower edge: the true minimum is no lower
        mean=_ms(float(np.dot(counts, (lows + edges + 1) / 2)) / n),  # bucket midpoints, as HDR does
        max=_ms(int(edges[-1])),
        distribution=[[round(p, 6), at(p)] for p in _distribution_points(n)],
        **{k: at(p) for k, p in zip(keys, PERCENTILES, strict=True)},  # type: ignore[typeddict-item]
    )


def _verdict_doc(verdict: Verdict) -> VerdictDoc:
    estimate = verdict.early_stopping_estimate_ns
    return VerdictDoc(
        result=verdict.label,
        valid=verdict.valid,
        checks=[
            CheckDoc(name=c.name, passed=c.passed, detail=c.detail, recommendation=c.recommendation)
            for c in verdict.checks
        ],
        early_stopping_percentile=verdict.early_stopping_percentile,
        early_stopping_estimate_ms=None if estimate is None else _ms(estimate),
        cause=verdict.cause,
    )


# --- result objects ---


@dataclass(frozen=True, eq=False)
class ClassResult:
    """Raw measurements of one traffic class: three ns histograms (successes only) and error counts."""

    traffic_class: str
    intended_to_done: HdrHistogram
    sent_to_done: HdrHistogram
    send_lag: HdrHistogram
    errors: Mapping[str, int] = field(default_factory=dict)  # by gRPC status name
    overflow_count: int = 0
    sample_count: int | None = None  # None: queries x samples_per_query x batch_size
    offered_count: int | None = None  # arrivals intended inside the window; None: not known
    tokens: Any = None  # TokenStats of a generative transport's answers (client/token_metrics.py); None: none
    deadline_count: int = 0  # requests that carried their own deadline (goodput counts an answer as within it)
    cancelled_count: int = 0  # requests the client cancelled on purpose: neither errors nor successes
    # latency -> the whole seconds of the measured window, compact buckets each (client/timeline.read_seconds),
    # for the intervals' correlation (client/batch_means.py); None: not known (merges): independence assumed
    batches: Mapping[str, Sequence[Compact]] | None = None

    @property
    def ok_count(self) -> int:
        return self.intended_to_done.get_total_count()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @cached_property
    def latency_ms(self) -> dict[str, LatencyDoc]:
        return {name: latency_summary(getattr(self, name)) for name in LATENCIES}

    @cached_property
    def intervals(self) -> IntervalsDoc:
        """Every reported percentile's distribution-free interval, in ms (client/intervals.py), widened by the
        correlation its one-second batches show (client/batch_means.py) where they are known."""
        from tailmark.client.batch_means import inflation_at
        from tailmark.client.intervals import DEFAULT_CONFIDENCE, interval_worth

        out: dict[str, dict[str, list[float | None]]] = {}
        correlation: dict[str, dict[str, float | None]] | None = None if self.batches is None else {}
        for name in LATENCIES:
            hist = getattr(self, name)
            edges, counts = buckets(hist)
            n = int(counts.sum())
            seconds = None if self.batches is None else self.batches.get(name, ())
            out[name] = {}
            for key, pct in zip(_PERCENTILE_KEYS, PERCENTILES, strict=True):
                inflation = None if seconds is None or not n else inflation_at(seconds, percentile_ns(hist, pct))
                worth = n if inflation is None else inflation.effective(n)
                ends = interval_worth(edges, counts, pct, worth, DEFAULT_CONFIDENCE)
                out[name][key] = [None if v is None else _ms(v) for v in ends]
                if correlation is not None:
                    correlation.setdefault(name, {})[key] = None if inflation is None else round(inflation.factor, 2)
        return IntervalsDoc(confidence=DEFAULT_CONFIDENCE, latency_ms=out, correlation=correlation)


def _aggregate(classes: Sequence[ClassResult]) -> ClassResult:
    """The "all" class: histograms added bucket by bucket (lossless), counts summed."""
    hists = []
    for name in LATENCIES:
        total = hlog.new_histogram()
        for c in classes:
            hlog.add_into(total, getattr(c, name))  # upstream add() of an errors-only class zeroes the min
        hists.append(total)
    errors: dict[str, int] = {}
    for c in classes:
        for status, n in c.errors.items():
            errors[status] = errors.get(status, 0) + n
    samples = [c.sample_count for c in classes]
    offered = [c.offered_count for c in classes]
    batches = None
    if classes and all(c.batches is not None for c in classes):  # the same seconds for every class: add them up
        batches = {name: _added([c.batches.get(name, ()) for c in classes]) for name in LATENCIES}  # type: ignore[union-attr]
    return ClassResult(
        ALL, *hists, errors=errors, overflow_count=sum(c.overflow_count for c in classes), batches=batches,
        sample_count=None if None in samples else sum(samples),  # type: ignore[arg-type]
        offered_count=None if None in offered else sum(offered),  # type: ignore[arg-type]
        tokens=_merged_tokens(classes),
        deadline_count=sum(c.deadline_count for c in classes),
        cancelled_count=sum(c.cancelled_count for c in classes),
    )  # fmt: skip


def _added(per_class: Sequence[Sequence[Compact]]) -> list[Compact]:
    """Second by second, the classes' compact histograms added together (the seconds of one log: same count)."""
    return [Compact.merged(same_second) for same_second in zip(*per_class, strict=True)]


def _merged_tokens(classes: Sequence[ClassResult]):
    from tailmark.client.token_metrics import merged

    parts = [c.tokens for c in classes if c.tokens is not None]
    return merged(parts) if parts else None


@dataclass(frozen=True, eq=False)
class ScenarioResult:
    """One scenario's result: settings, raw histograms per class, lazily computed statistics and verdicts.

    ``classes`` maps traffic class to ``ClassResult``; an ``"all"`` aggregate is added when missing.
    ``duration_s`` is the measured window as LoadGen measures it (see ``verdict.judge``).

    Example::

        >>> result                                                   # doctest: +SKIP
        <ScenarioResult server INVALID: 1200 queries in 10.0 s (120.0/s of 120.0/s offered),
         p99 4.211 ms; failed (client): client_bound [client-bound (CPU saturated): client CPU 97 %
         (bound 90 %)]>
    """

    settings: EffectiveSettings
    classes: Mapping[str, ClassResult]
    duration_s: float
    client_cpu_pct: float | None = None  # client process CPU over the window, % of one core
    throughput_per_s: Sequence[int] = ()  # completions in each second, for the throughput plot
    server_stats: Mapping[str, Any] | None = None  # client/server_stats.difference over the scenario
    evidence: ScenarioEvidence | None = None  # the client's and the host's side of the window
    server_metrics: Mapping[str, Any] | None = None  # metrics_scrape.series_doc's summary; None: not scraped
    class_settings: Mapping[str, EffectiveSettings] | None = None  # mixed: each class's (traffic_classes.py)
    sessions: Mapping[str, Any] | None = None  # multi-turn sessions (client/sessions.py); None: single requests

    @cached_property
    def by_class(self) -> dict[str, ClassResult]:
        """Every class with "all" first (the aggregate is built here if the caller did not pass one)."""
        named = {k: v for k, v in self.classes.items() if k != ALL}
        if ALL in self.classes:
            total = self.classes[ALL]
        elif len(named) == 1:
            total = next(iter(named.values()))
        else:
            total = _aggregate(list(named.values()))
        return {ALL: total, **dict(sorted(named.items()))}

    @cached_property
    def verdicts(self) -> dict[str, Verdict]:
        if self.class_settings:  # mixed: each class by its own SLO, "all" by every class (docs/verdicts.md)
            from tailmark.client.traffic_classes import all_classes_verdict

            named = {name: self._judge(c, name) for name, c in self.by_class.items() if name != ALL}
            return {ALL: all_classes_verdict(named), **named}
        return {name: self._judge(c) for name, c in self.by_class.items()}

    def settings_of(self, name: str) -> EffectiveSettings:
        """The settings a class is judged by: its own in a mixed scenario, else the scenario's."""
        return (self.class_settings or {}).get(name, self.settings)

    @cached_property
    def goodput(self) -> dict[str, GoodputDoc | None]:
        """Each class's goodput against its own SLO, and "all" summed over the classes that have one."""
        out = {}
        for name, c in self.by_class.items():
            if name != ALL:
                out[name] = class_goodput(
                    name, c.intended_to_done, c.error_count, slo_ms=self.settings_of(name).request_slo_ms or 0.0,
                    deadline_count=c.deadline_count, duration_s=self.duration_s,
                )  # fmt: skip
        if len(out) == 1:  # "all" is the one class
            return {ALL: next(iter(out.values())), **out}
        return {ALL: total_goodput(out.values(), self.duration_s), **out}

    @property
    def verdict(self) -> Verdict:
        """The scenario's verdict: the one of "all"."""
        return self.verdicts[ALL]

    def _judge(self, c: ClassResult, name: str = ALL) -> Verdict:
        offline = self.settings.scenario is Scenario.OFFLINE
        evidence = self.evidence.for_verdict() if self.evidence is not None else None
        return self._with_token_checks(c, judge(
            self.settings_of(name), duration_s=self.duration_s, latency=c.intended_to_done,
            send_lag=None if offline else c.send_lag, sent_to_done=None if offline else c.sent_to_done,
            errors=c.errors, sample_count=c.sample_count, client_cpu_pct=self.client_cpu_pct, evidence=evidence,
        ))  # fmt: skip

    def _with_token_checks(self, c: ClassResult, verdict: Verdict) -> Verdict:
        """LoadGen's LLM constraints (TTFT, TPOT) when the settings bound them (client/token_verdict.py)."""
        from tailmark.client.token_verdict import with_token_checks

        return with_token_checks(verdict, self.settings, c.tokens, c.error_count)

    def _class_doc_with_tokens(self, name: str, c: ClassResult) -> ClassDoc:
        doc = self._class_doc(name, c)
        if c.cancelled_count:
            doc["cancelled_count"] = c.cancelled_count
        if c.tokens is not None:
            from tailmark.client.token_metrics import tokens_doc

            s = self.settings
            slos = {"ttft": s.slo_ttft_ms, "tpot": s.slo_tpot_ms, "e2e": s.slo_e2e_ms}
            doc["tokens"] = tokens_doc(c.tokens, duration_s=self.duration_s, failed=c.error_count, slos_ms=slos)
        return doc

    def _samples(self, c: ClassResult) -> int:
        if c.sample_count is not None:
            return c.sample_count
        if c.traffic_class == ALL and self.class_settings:  # mixed: each class with its own batch size
            return sum(self._samples(k) for name, k in self.by_class.items() if name != ALL)
        settings = self.settings_of(c.traffic_class)
        return (c.ok_count + c.error_count) * settings.samples_per_query * settings.batch_size

    def _rate(self, count: float) -> float:
        return count / self.duration_s if self.duration_s > 0 else 0.0

    def offered_rate_qps(self, c: ClassResult) -> float | None:
        if self.settings.scenario in CLOSED_LOOP:
            return None
        if c.offered_count is not None:
            return self._rate(c.offered_count)
        if c.traffic_class == ALL and self.settings.target_qps and self.settings.scenario is not Scenario.OFFLINE:
            return self.settings.target_qps
        return None

    @cached_property
    def warnings(self) -> tuple[str, ...]:
        """Things a reader must know before trusting the numbers (they do not change the verdict)."""
        total = self.by_class[ALL]
        out = list(self.verdict.notes)  # the attribution's: send lag that did not decide, a noisy host
        if total.error_count:
            share = 100.0 * total.error_count / max(total.ok_count + total.error_count, 1)
            out.append(f"{total.error_count} requests failed ({share:.2f} %); latencies cover successes only")
        if total.overflow_count:
            out.append(f"{total.overflow_count} latencies above the histogram's range were clamped to its top")
        offered = self.offered_rate_qps(total)
        achieved = self._rate(total.ok_count)
        if offered and achieved < 0.95 * offered:
            if total.error_count and total.error_count >= 0.5 * (offered - achieved) * self.duration_s:
                out.append(f"achieved {achieved:.1f}/s of the offered {offered:.1f}/s: the rest failed (see errors)")
            else:
                out.append(f"achieved {achieved:.1f}/s is under the offered {offered:.1f}/s: the server fell behind")
        if 0 < total.ok_count < 1000:
            out.append(f"only {total.ok_count} queries: p99.9 is the maximum")
        return tuple(out)

    def _class_doc(self, name: str, c: ClassResult) -> ClassDoc:
        return ClassDoc(
            traffic_class=name, query_count=c.ok_count + c.error_count, ok_count=c.ok_count,
            error_count=c.error_count, sample_count=self._samples(c), duration_s=self.duration_s,
            offered_rate_qps=self.offered_rate_qps(c), achieved_rate_qps=self._rate(c.ok_count),
            sample_rate_per_s=self._rate(self._samples(c) * c.ok_count / max(c.ok_count + c.error_count, 1)),
            latency_ms=c.latency_ms, errors=dict(c.errors), overflow_count=c.overflow_count,
            verdict=_verdict_doc(self.verdicts[name]), intervals=c.intervals, goodput=self.goodput[name],
        )  # fmt: skip

    def to_dict(self) -> ScenarioDoc:
        doc = self._scenario_doc()
        if self.sessions is not None:
            doc["sessions"] = dict(self.sessions)
        return doc

    def _scenario_doc(self) -> ScenarioDoc:
        return ScenarioDoc(
            scenario=str(self.settings.scenario),
            result=self.verdict.label,
            settings=self.settings.to_dict(),
            duration_s=self.duration_s,
            client_cpu_pct=self.client_cpu_pct,
            warnings=list(self.warnings),
            throughput_per_s=[int(x) for x in self.throughput_per_s],
            classes={name: self._class_doc_with_tokens(name, c) for name, c in self.by_class.items()},
            server_stats=dict(self.server_stats) if self.server_stats is not None else None,
            evidence=self.evidence.to_dict() if self.evidence is not None else None,
            server_metrics=dict(self.server_metrics) if self.server_metrics is not None else None,
        )

    def __repr__(self) -> str:
        total = self.by_class[ALL]
        offered = self.offered_rate_qps(total)
        rate = f"{self._rate(total.ok_count):.1f}/s" + (f" of {offered:.1f}/s offered" if offered else "")
        p99 = total.latency_ms["intended_to_done"]["p99"]
        text = f"<ScenarioResult {self.settings.scenario} {self.verdict.label}: {total.ok_count} queries in "
        text += f"{self.duration_s:.1f} s ({rate}), p99 " + ("n/a" if p99 is None else f"{p99:.3f} ms")
        if self.verdict.failed:
            text += f"; failed ({self.verdict.cause}): " + ", ".join(c.name for c in self.verdict.failed)
            blame = [c.detail for c in self.verdict.failed if c.name in ("client_bound", "host_noise")]
            if blame:
                text += " [" + "; ".join(blame) + "]"
        if self.warnings:
            text += "; warnings: " + "; ".join(self.warnings)
        return text + ">"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(eq=False)
class RunResult:
    """A whole run: environment and the scenarios finished so far; ``write`` after each one."""

    environment: dict[str, Any]
    scenarios: list[ScenarioResult] = field(default_factory=list)
    complete: bool = False
    interrupted: str | None = None
    created_at: str = field(default_factory=_now)
    calibration: dict[str, Any] | None = None  # client/calibration.Calibration.to_dict(), before the first scenario
    repeat_count: int | None = None  # --repeat K: scenarios hold K runs of the list, one after the other
    scenarios_per_repeat: int = 0

    @property
    def valid(self) -> bool:
        return bool(self.scenarios) and all(s.verdict.valid for s in self.scenarios)

    def to_dict(self) -> ResultsDoc:
        scenarios = [s.to_dict() for s in self.scenarios]
        repeats = None
        if self.repeat_count:
            for i, doc in enumerate(scenarios):
                doc["repeat"] = repeat_number(i, self.scenarios_per_repeat)
            repeats = summarize(scenarios, count=self.repeat_count, scenarios_per_repeat=self.scenarios_per_repeat)
        return ResultsDoc(
            schema_version=SCHEMA_VERSION, created_at=self.created_at, updated_at=_now(), complete=self.complete,
            interrupted=self.interrupted, environment=self.environment, calibration=self.calibration,
            scenarios=scenarios, repeats=repeats,
        )  # fmt: skip

    def write(self, path: str | Path) -> ResultsDoc:
        """Validate and atomically (re)write results.json; returns the document written."""
        doc = self.to_dict()
        validate(doc)
        write_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        return doc


# --- files ---


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` all at once: temp file in the same folder, fsync, rename."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every platform can open a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_results(path: str | Path) -> ResultsDoc:
    """Read results.json, refusing other schema versions and documents that lack a required key."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"{path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {version!r}; this tailmark reads version {SCHEMA_VERSION}")
    try:
        validate(doc)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None
    return typing.cast(ResultsDoc, doc)
