"""Merging runs of several client processes or hosts into one result, with the verdicts recomputed.

When one client process cannot offer the load, several run side by side against the same endpoint, each with
its share of the rate (and, for Poisson, its own ``--seed``). Each writes a run directory. Merging adds their
cumulative histograms bucket by bucket, which is lossless: the merged histograms are exactly those one
recorder holding every request would have. Every number is then read from the merged histograms with the
same rule a single run uses (LoadGen's percentile rank on bucket upper edges, ``verdict.percentile_ns``),
and the verdicts are judged again from them: a verdict is never combined from the inputs' verdicts.

Judging needs the settings, which come from each input's results.json. They must agree, except the fields that
are naturally one process's share (``PER_PROCESS``): the merged offered rate is the sum of the inputs' rates,
and the merged window is the longest input window (the processes ran at the same time). Inputs whose
settings differ otherwise are refused, because no single verdict would describe them.

``MergedRun.scenarios`` are ordinary ``results.ScenarioResult`` objects, so a merged run directory is
``RunResult(environment=..., scenarios=list(merged.scenarios)).write(...)`` away.

Example::

    merged = merge_runs([load_part(Path("runs/a")), load_part(Path("runs/b"))])
    merged.write_histograms("merged.json")
    print(summary(merged))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailmark.client.errors import TailmarkError
from tailmark.client.recorder import Recorder, RecorderFormatError, merged, scenario_keys
from tailmark.client.results import ALL, ClassResult, ResultsDoc, ResultsError, ScenarioResult, load_results
from tailmark.client.results import write_atomic as _write_atomic
from tailmark.client.settings import (
    CLOSED_LOOP,
    EffectiveSettings,
    Scenario,
    ScenarioSettings,
    check_mapping,
)
from tailmark.client.token_store import TokenStoreError
from tailmark.client.token_store import load as load_tokens
from tailmark.client.token_store import merged_by_key as merged_tokens
from tailmark.client.traffic_classes import class_settings
from tailmark.client.verdict import percentile_ns
from tailmark.traces.arrival import DEFAULT_CLASS

HISTOGRAMS = "histograms.json"
RESULTS = "results.json"
# Settings that are one process's share of the load or its own randomness: they may differ between inputs.
PER_PROCESS = frozenset(
    {"target_qps", "schedule_seed", "sample_seed", "trace_path", "offline_sample_count", "max_outstanding"}
)
_SUMMED = ("target_qps", "offline_sample_count", "max_outstanding")  # the merged value is the inputs' total


class MergeError(TailmarkError):
    """Inputs that cannot be merged: unreadable, or runs whose settings differ (the message says how)."""


@dataclass(frozen=True, eq=False)
class RunPart:
    """One client process's run: its cumulative histograms, and its results document when there is one."""

    source: Path
    recorder: Recorder
    results: ResultsDoc | None
    tokens: dict | None = None  # generative runs' token timings by (scenario, class) (client/token_store.py)


@dataclass(frozen=True, eq=False)
class MergedRun:
    """The sum of several runs: one recorder, the scenarios judged again (empty without settings), and notes."""

    parts: tuple[RunPart, ...]
    recorder: Recorder
    names: tuple[str, ...]  # the scenarios' keys in the recorder ("server", "server-2", ...)
    scenarios: tuple[ScenarioResult, ...]  # in the runs' order; empty when the settings are not known
    notes: tuple[str, ...]
    tokens: dict | None = None  # the parts' token timings summed (generative runs), written as tokens.json

    def write_histograms(self, path: str | Path) -> None:
        """The merged cumulative histograms, in the histograms.json format (atomically)."""
        _write_atomic(path, json.dumps(self.recorder.to_dict()) + "\n")


def load_part(path: Path) -> RunPart:
    """A run directory (histograms.json, and results.json when present) or a histograms file.

    A file named histograms.json takes the results.json beside it; any other file (e.g. an earlier merge's
    output) is histograms only.
    """
    histograms = path / HISTOGRAMS if path.is_dir() else path
    try:
        recorder = Recorder.from_dict(json.loads(histograms.read_text(encoding="utf-8")))
    except OSError as exc:
        raise MergeError(f"{histograms}: {exc.strerror}") from None
    except (ValueError, RecorderFormatError) as exc:  # JSONDecodeError is a ValueError
        raise MergeError(f"{histograms}: {exc}") from None
    results_path = histograms.parent / RESULTS
    results = tokens = None
    if histograms.name == HISTOGRAMS and results_path.is_file():
        try:
            results = load_results(results_path)
            tokens = load_tokens(histograms.parent)
        except (ResultsError, TokenStoreError) as exc:
            raise MergeError(str(exc)) from None
    return RunPart(source=path, recorder=recorder, results=results, tokens=tokens)


def merge_runs(parts: Sequence[RunPart]) -> MergedRun:
    """Add the parts' histograms; judge each scenario again when every part has its settings."""
    if not parts:
        raise ValueError("merge_runs needs at least one run")
    recorder = merged(p.recorder for p in parts)
    tokens = merged_tokens(p.tokens for p in parts)
    missing = [str(p.source) for p in parts if p.results is None]
    if missing:
        note = f"verdicts not recomputed: no results.json with the settings for {', '.join(missing)}"
        return MergedRun(tuple(parts), recorder, (), (), (note,), tokens)
    runs = [_scenarios(p) for p in parts]
    names = [list(r) for r in runs]
    if any(n != names[0] for n in names[1:]):
        listing = "; ".join(f"{p.source}: {', '.join(n) or 'none'}" for p, n in zip(parts, names, strict=True))
        raise MergeError(f"the runs measured different scenarios ({listing}); merge runs of the same scenarios")
    scenarios, notes = [], []
    for name in names[0]:
        docs = [r[name] for r in runs]
        settings = _merged_settings(name, [_settings(p, d) for p, d in zip(parts, docs, strict=True)], parts)
        scenarios.append(_scenario_result(recorder, name, settings, docs, tokens))
        notes += _coinciding(name, docs)
    for part in parts:
        if part.results is not None and not part.results["complete"]:
            notes.append(f"{part.source} is a partial run ({part.results['interrupted'] or 'not complete'})")
    return MergedRun(tuple(parts), recorder, tuple(names[0]), tuple(scenarios), tuple(notes), tokens)


def summary(run: MergedRun) -> str:
    """The console text: requests and p99 per scenario/class, then each recomputed verdict and the notes."""
    lines = []
    for key in run.recorder.keys():
        hist = run.recorder.histogram(key)
        p99_ms = percentile_ns(hist, 99.0) / 1e6
        lines.append(f"{key[0]}/{key[1]}: {hist.get_total_count()} requests, p99 {p99_ms:.3f} ms")
    for name, scenario in zip(run.names, run.scenarios, strict=True):
        verdict, total = scenario.verdict, scenario.by_class[ALL]
        pct = scenario.settings.early_stopping_percentile or 99.0
        value_ms = percentile_ns(total.intended_to_done, pct) / 1e6
        lines.append(
            f"{name}: {verdict.label}, judged again from the merged histograms of {len(run.parts)} runs: "
            f"{total.ok_count + total.error_count} queries in {scenario.duration_s:.3f} s, p{pct:g} {value_ms:.3f} ms"
        )
        lines += [f"  - {reason}" for reason in verdict.reasons]
    lines += [f"note: {note}" for note in run.notes]
    return "\n".join(lines)


# --- settings ---


def _scenarios(part: RunPart) -> dict[str, Mapping[str, Any]]:
    docs = part.results["scenarios"] if part.results else []
    return dict(zip(scenario_keys(d["scenario"] for d in docs), docs, strict=True))


def _settings(part: RunPart, doc: Mapping[str, Any]) -> EffectiveSettings:
    """The EffectiveSettings a results.json scenario was run with."""
    raw = doc["settings"]
    where = f"{part.source}: scenario {doc['scenario']} settings"
    try:
        effective = check_mapping(dict(raw["effective"]), source=where)
        requested = check_mapping({k: v for k, v in raw["requested"].items() if v is not None}, source=where)
        return EffectiveSettings(**effective, requested=ScenarioSettings(**requested), mlperf=bool(raw["mlperf"]))
    except (KeyError, TypeError, TailmarkError) as exc:
        raise MergeError(f"{where}: cannot be read ({exc})") from None


def _merged_settings(name: str, settings: list[EffectiveSettings], parts: Sequence[RunPart]) -> EffectiveSettings:
    """One EffectiveSettings for the merged scenario; refuses inputs that differ beyond PER_PROCESS."""
    first = settings[0]
    for field in [f.name for f in dataclasses.fields(ScenarioSettings)] + ["mlperf"]:
        if field in PER_PROCESS:
            continue
        values = [getattr(s, field) for s in settings]
        if any(v != values[0] for v in values[1:]):
            shown = ", ".join(f"{v} in {p.source}" for v, p in zip(values, parts, strict=True))
            raise MergeError(f"scenario {name}: {field} differs ({shown}); only runs with the same settings merge")
    totals = {f: sum(getattr(s, f) for s in settings) for f in _SUMMED}
    requested = first.requested
    if requested.target_qps is not None:
        requested = dataclasses.replace(requested, target_qps=totals["target_qps"])
    return dataclasses.replace(first, **totals, requested=requested)


def _coinciding(name: str, docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note when the inputs sent the same schedule: their arrivals coincide instead of adding up to one stream."""
    effective = [d["settings"]["effective"] for d in docs]
    scenario = Scenario(effective[0]["scenario"])
    match scenario:
        case Scenario.SERVER | Scenario.POISSON:
            same = ("schedule_seed", "target_qps")
        case Scenario.FIXED_INTERVAL:
            same = ("target_qps",)
        case Scenario.TRACE:
            same = ("trace_path", "trace_speed")
        case Scenario.SINGLE_STREAM | Scenario.MULTI_STREAM | Scenario.OFFLINE | Scenario.CONCURRENCY | Scenario.MIXED:
            return []
    if len(docs) < 2 or any(tuple(e[k] for k in same) != tuple(effective[0][k] for k in same) for e in effective):
        return []
    shared = " and ".join(same)
    advice = "give each client process its own --seed or its own slice of the trace"
    return [f"{name}: the runs share {shared}, so their arrivals coincide, not one stream at the summed rate; {advice}"]


# --- the merged scenario ---


def _scenario_result(
    recorder: Recorder,
    name: str,
    settings: EffectiveSettings,
    docs: Sequence[Mapping[str, Any]],
    tokens: dict | None = None,
) -> ScenarioResult:
    """The merged scenario: histograms (and token timings) from the merged parts, counts summed, the longest
    window."""
    classes = {}
    for key in recorder.keys():
        scenario, traffic_class = key
        if scenario != name:
            continue
        classes[traffic_class] = ClassResult(
            traffic_class=traffic_class,
            intended_to_done=recorder.histogram(key, "intended_to_done"),
            sent_to_done=recorder.histogram(key, "sent_to_done"),
            send_lag=recorder.histogram(key, "send_lag"),
            errors=dict(recorder.errors(key)),
            overflow_count=recorder.overflow(key)["intended_to_done"],
            sample_count=_summed_class(docs, traffic_class, "sample_count")
            if settings.scenario is Scenario.OFFLINE and traffic_class == DEFAULT_CLASS
            else None,
            offered_count=None if settings.scenario in CLOSED_LOOP else _offered(docs, traffic_class),
            tokens=tokens.get(key) if tokens is not None else None,
        )
    cpu = [d["client_cpu_pct"] for d in docs if d["client_cpu_pct"] is not None]
    return ScenarioResult(
        settings=settings,
        classes=classes,
        duration_s=max(d["duration_s"] for d in docs),  # the processes ran side by side
        client_cpu_pct=max(cpu) if cpu else None,  # one saturated process limits the whole load
        class_settings=class_settings(settings) if settings.scenario is Scenario.MIXED else None,
    )


def _summed_class(docs: Sequence[Mapping[str, Any]], traffic_class: str, field: str) -> int | None:
    values = [d["classes"].get(traffic_class, {}).get(field) for d in docs]
    return None if None in values else sum(values)


def _offered(docs: Sequence[Mapping[str, Any]], traffic_class: str) -> int | None:
    """Arrivals intended inside the windows, from each input's offered rate and window."""
    total = 0
    for d in docs:
        rate = d["classes"].get(traffic_class, {}).get("offered_rate_qps")
        if rate is None:
            return None
        total += round(rate * d["duration_s"])
    return total
