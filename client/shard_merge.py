"""Merging the shards of one split load (``tailmark run --shard I/N``) into one run, judged again, shards checked.

``tailmark merge`` sends inputs here first (``merge_inputs``). Runs that are not shards go on to
client/merge.py's ordinary merge. Shards are one run cut N ways, so they must all carry the same N, the same
common start and the same settings (the whole run's: the rate, seed and counts are not per-process shares here),
and they are merged as one run: histograms added bucket by bucket (lossless), counts summed, the window the
longest shard window (the shard holding the last arrival ends exactly where the single process would), and every
verdict judged again from the sums.

Two things differ from an ordinary merge:

- **The client's side is judged per shard.** Send lag, CPU, the backlog at the window's end and the host probe
  are one process's evidence: each shard's attribution rules (client/attribution.py) run on its own histograms
  and evidence, and the merged ``client_bound`` check fails when any shard's did, naming it (the same for
  ``host_noise``). The merged send-lag histogram is still reported; it just does not blame a process.
- **A ``shards`` check.** A shard that is missing (fewer than N run directories, or one that cannot be read), has
  no result for a scenario (it died before it), is partial (interrupted or killed during it), began late (its
  first scenario's schedule more than ``start_tolerance_s`` after the common start, a later scenario that long
  after the earliest shard's), or measured its clock that far off the target's, is named, and the result is
  INVALID (cause: client) instead of silently smaller.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from tailmark.client.attribution import Evidence
from tailmark.client.check import Check
from tailmark.client.merge import (
    HISTOGRAMS,
    MergedRun,
    MergeError,
    RunPart,
    _scenario_result,
    _scenarios,
    _settings,
    load_part,
    merge_runs,
)
from tailmark.client.recorder import METRICS, merged
from tailmark.client.results import ClassResult, ResultsDoc, RunResult, ScenarioResult
from tailmark.client.settings import Scenario
from tailmark.client.token_store import merged_by_key as merged_tokens
from tailmark.client.token_store import write as write_tokens
from tailmark.client.verdict import Verdict, judge

START_TOLERANCE_S = 0.1  # a shard that began later than this after the common start is named
ATTRIBUTION = ("client_bound", "host_noise")
BOUND_CHECKS = ("early_stopping", "latency_bound")


@dataclass(frozen=True, eq=False)
class ShardView:
    """One shard's own share of a scenario, for the per-shard client checks."""

    label: str  # "I/N"
    result: ScenarioResult  # the shard's histograms and settings (no evidence: see ``evidence``)
    evidence: Evidence


@dataclass(frozen=True, eq=False)
class ShardedScenarioResult(ScenarioResult):
    """A merged scenario whose client checks come from each shard's evidence, plus the ``shards`` check."""

    shard_views: tuple[ShardView, ...] = ()
    shard_check: Check | None = None

    @cached_property
    def verdicts(self) -> dict[str, Verdict]:
        out = {}
        for name, c in self.by_class.items():
            own = [(v.label, _judge_view(v, name)) for v in self.shard_views if name in v.result.by_class]
            out[name] = combine(self._judge(c), [(label, verdict) for label, verdict in own if verdict is not None],
                                self.shard_check)  # fmt: skip
        return out


def _judge_view(view: ShardView, name: str) -> Verdict | None:
    c = view.result.by_class.get(name)
    if c is None:
        return None
    offline = view.result.settings.scenario is Scenario.OFFLINE
    return judge(
        view.result.settings, duration_s=view.result.duration_s, latency=c.intended_to_done,
        send_lag=None if offline else c.send_lag, sent_to_done=None if offline else c.sent_to_done, errors=c.errors,
        sample_count=c.sample_count, client_cpu_pct=view.evidence.client_cpu_pct, evidence=view.evidence,
    )  # fmt: skip


def combine(merged: Verdict, shards: Sequence[tuple[str, Verdict]], shard_check: Check | None) -> Verdict:
    """The merged verdict with its client/host checks replaced by the shards' own, and the shards check added."""
    attributed: list[Check] = []
    client = [(label, c) for label, v in shards for c in v.checks if c.name == "client_bound"]
    failing = [(label, c) for label, c in client if not c.passed]
    shown = failing or client
    detail = "; ".join(f"shard {label}: {c.detail}" for label, c in shown) or "no shard's evidence"
    attributed.append(Check("client_bound", not failing, detail, failing[0][1].recommendation if failing else ""))
    host = [(label, c) for label, v in shards for c in v.checks if c.name == "host_noise" and not c.passed]
    if host:
        text = "; ".join(f"shard {label}: {c.detail}" for label, c in host)
        attributed.append(Check("host_noise", False, text, host[0][1].recommendation))
    checks = [c for c in merged.checks if c.name not in ATTRIBUTION]
    if any(not c.passed for c in attributed):
        advice = "The client or the host limited this result, not the endpoint: see the client_bound / host_noise check"
        checks = [Check(c.name, c.passed, c.detail, advice) if c.name in BOUND_CHECKS and not c.passed else c
                  for c in checks]  # fmt: skip
    at = next((i for i, c in enumerate(checks) if c.name == "errors"), len(checks))
    checks[at:at] = attributed
    if shard_check is not None:
        checks.append(shard_check)
    notes = tuple(f"shard {label}: {note}" for label, v in shards for note in v.notes)
    return Verdict(tuple(checks), merged.early_stopping_estimate_ns, merged.early_stopping_percentile, notes)


def evidence_from_doc(doc: Mapping[str, Any] | None) -> Evidence:
    """The attribution's plain numbers from a results.json scenario's ``evidence`` (ScenarioEvidence.to_dict)."""
    if not doc:
        return Evidence()
    probe = doc.get("host_probe") or {}
    late = probe.get("late_ms") or {}
    woke = bool(probe.get("wakeups")) and late.get("p99") is not None
    wait_ms, window_s = probe.get("client_wait_ms"), probe.get("window_s")
    return Evidence(
        client_cpu_pct=doc.get("client_cpu_pct"),
        offered=doc.get("offered"),
        unsent_at_end=doc.get("unsent_at_end"),
        held_by_cap=doc.get("held_by_cap") or 0,
        probe_p99_ns=round(late["p99"] * 1e6) if woke else None,
        probe_max_ns=round(late["max"] * 1e6) if woke and late.get("max") is not None else None,
        client_wait_pct=100.0 * wait_ms / 1e3 / window_s if wait_ms is not None and window_s else None,
        probe_held_pct=probe.get("held_pct") if woke else None,
    )


# --- reading the inputs ---


@dataclass(eq=False)
class ShardSet:
    """The shards among the inputs, and what is wrong with the set as a whole."""

    count: int
    start_at: str
    members: dict[int, RunPart]
    unreadable: list[str] = field(default_factory=list)

    def info(self, index: int) -> dict[str, Any]:
        return _shard_info(self.members[index])

    def label(self, index: int) -> str:
        return f"{index}/{self.count}"

    @property
    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.members]


def _shard_info(part: RunPart) -> dict[str, Any] | None:
    return part.results["environment"].get("shard") if part.results is not None else None


def merge_inputs(
    paths: Sequence[Path], *, expected_count: int | None = None, start_tolerance_s: float = START_TOLERANCE_S
) -> MergedRun:
    """Load ``paths`` and merge them: as shards when they are (unreadable ones then count as dead shards), else
    as independent runs (client/merge.py)."""
    parts, unreadable = [], []
    for path in paths:
        try:
            parts.append(load_part(path))
        except MergeError as exc:
            unreadable.append((path, str(exc)))
    shards = [p for p in parts if _shard_info(p) is not None]
    if not shards:
        if unreadable:
            raise MergeError(unreadable[0][1])
        return merge_runs(parts)
    unreadable += [(p.source, "no results.json beside its histograms") for p in parts if p.results is None]
    others = [str(p.source) for p in parts if p.results is not None and _shard_info(p) is None]
    if others:
        raise MergeError(f"{', '.join(others)}: not a shard (no --shard); merge the shards of one run together")
    return merge_shards(_shard_set(shards, unreadable, expected_count), start_tolerance_s)


def _shard_set(parts: list[RunPart], unreadable: list[tuple[Path, str]], expected_count: int | None) -> ShardSet:
    infos = [_shard_info(p) or {} for p in parts]
    runs = {(i["count"], i["start_at"]) for i in infos}
    if len(runs) > 1:
        shown = ", ".join(f"{p.source}: {i['index']}/{i['count']} from {i['start_at']}"
                          for p, i in zip(parts, infos, strict=True))  # fmt: skip
        raise MergeError(f"the inputs are shards of different runs ({shown}); merge the shards of one run")
    count, start_at = runs.pop()
    if expected_count is not None and count != expected_count:
        raise MergeError(f"the shards say N = {count}, not the {expected_count} expected")
    members: dict[int, RunPart] = {}
    for part, info in zip(parts, infos, strict=True):
        if info["index"] in members:
            other = members[info["index"]].source
            raise MergeError(f"shard {info['index']}/{count} given twice ({other} and {part.source})")
        members[info["index"]] = part
    lost = [f"{path} could not be read ({why})" for path, why in unreadable]
    return ShardSet(count=count, start_at=start_at, members=dict(sorted(members.items())), unreadable=lost)


# --- the merge ---


def merge_shards(shards: ShardSet, start_tolerance_s: float = START_TOLERANCE_S) -> MergedRun:
    parts = list(shards.members.values())
    recorder = merged(p.recorder for p in parts)
    tokens = merged_tokens(p.tokens for p in parts)
    runs = {i: _scenarios(p) for i, p in shards.members.items()}
    names = max(runs.values(), key=len)  # the scenarios the furthest shard reached (a shard's list is a prefix)
    results, notes = [], []  # an unreadable input is named in each scenario's shards check
    for position, name in enumerate(names):
        have = {i: r[name] for i, r in runs.items() if name in r}
        settings = [_settings(shards.members[i], doc) for i, doc in have.items()]
        if any(s != settings[0] for s in settings[1:]):
            raise MergeError(f"scenario {name}: the shards ran it with different settings; shards of one run share "
                             "every setting")  # fmt: skip
        docs = list(have.values())
        base = _scenario_result(recorder, name, settings[0], docs, tokens)
        views = tuple(_view(shards, i, name, s, doc) for (i, doc), s in zip(have.items(), settings, strict=True))
        problems = _problems(shards, runs, name, position, start_tolerance_s)
        own = {f.name: getattr(base, f.name) for f in fields(ScenarioResult)}
        own.update(throughput_per_s=_summed_series(docs), server_stats=docs[0].get("server_stats"))
        check = _shards_check(shards, problems, start_tolerance_s, position)
        results.append(ShardedScenarioResult(**own, shard_views=views, shard_check=check))
    for i in shards.members:
        kernel = (shards.info(i).get("clock") or {}).get("kernel")
        if kernel and not kernel.get("synchronised"):
            notes.append(f"shard {shards.label(i)}: its kernel does not report the clock synchronised (no NTP/PTP?)")
    return MergedRun(tuple(parts), recorder, tuple(names), tuple(results), tuple(notes), tokens)


def _view(shards: ShardSet, index: int, name: str, settings, doc: Mapping[str, Any]) -> ShardView:
    part = shards.members[index]
    classes = {}
    for key in part.recorder.keys():
        if key[0] != name:
            continue
        histograms = {metric: part.recorder.histogram(key, metric) for metric in METRICS}
        classes[key[1]] = ClassResult(traffic_class=key[1], **histograms, errors=dict(part.recorder.errors(key)))
    result = ScenarioResult(settings=settings, classes=classes, duration_s=doc["duration_s"],
                            client_cpu_pct=doc["client_cpu_pct"])  # fmt: skip
    return ShardView(shards.label(index), result, evidence_from_doc(doc.get("evidence")))


def _summed_series(docs: Sequence[Mapping[str, Any]]) -> tuple[int, ...]:
    """Completions per second summed over the shards (their seconds line up: one common start)."""
    series = [d.get("throughput_per_s") or [] for d in docs]
    return tuple(sum(s[k] for s in series if k < len(s)) for k in range(max(map(len, series), default=0)))


def _problems(shards: ShardSet, runs, name: str, position: int, tolerance_s: float) -> list[str]:
    problems = [f"shard {shards.label(i)} missing (no run directory of it among the inputs)" for i in shards.missing]
    problems += shards.unreadable
    starts: dict[int, float] = {}
    for i, part in shards.members.items():
        info, label, source = shards.info(i), shards.label(i), part.source
        listed = list(runs[i])
        if name not in runs[i]:
            problems.append(f"shard {label} ({source}) has no {name} result: it stopped before it")
            continue
        # an interrupted run's last scenario is its partial window; one that died without a word (killed) has
        # whole scenarios up to its last write, and lacks the rest
        interrupted = part.results is not None and part.results["interrupted"]
        if interrupted and listed[-1] == name:
            problems.append(f"shard {label} ({source}) is partial during {name}: {interrupted}")
        entries = [e for e in info.get("scenarios", []) if e["scenario"] == name]
        if entries:
            starts[i] = entries[0]["schedule_start_unix_s"]
        clock = (info.get("clock") or {}).get("date_offset")
        if position == 0 and clock and abs(clock["offset_s"]) - clock["uncertainty_s"] > tolerance_s:
            source_url = info["clock"].get("date_source")
            problems.append(f"shard {label}'s clock is {clock['offset_s']:+.3f} s (+-{clock['uncertainty_s']:.3f} s) "
                            f"off the clock of {source_url} (tolerance {tolerance_s:g} s)")  # fmt: skip
    if position == 0:
        for i in starts:
            late = shards.info(i).get("started_late_s")
            if late is not None and abs(late) > tolerance_s:
                when = "after" if late > 0 else "before"
                problems.append(f"shard {shards.label(i)} began {abs(late):.3f} s {when} the common start "
                                f"{shards.start_at} (tolerance {tolerance_s:g} s)")  # fmt: skip
    elif starts:
        first = min(starts.values())
        for i, start in starts.items():
            if start - first > tolerance_s:
                problems.append(f"shard {shards.label(i)} began {name} {start - first:.3f} s after the first shard "
                                f"(tolerance {tolerance_s:g} s)")  # fmt: skip
    return problems


def _shards_check(shards: ShardSet, problems: list[str], tolerance_s: float, position: int) -> Check:
    if problems:
        advice = ("Rerun with every shard: start them before the common instant (a later --start-at), keep their "
                  "clocks synchronised (chrony/NTP or PTP), and merge every shard's run directory")  # fmt: skip
        return Check("shards", False, "; ".join(problems), advice)
    lateness = [abs(shards.info(i).get("started_late_s") or 0.0) for i in shards.members]
    detail = f"{shards.count} of {shards.count} shards"
    if position == 0:
        detail += f", each began within {1e3 * max(lateness):.1f} ms of the common start {shards.start_at}"
    else:
        detail += ", each began this scenario within the tolerance of the first"
    return Check("shards", True, detail + f" (tolerance {tolerance_s:g} s)")


# --- writing ---


def merged_environment(run: MergedRun) -> dict[str, Any]:
    """The first input's environment, with where the merge came from and, for shards, each shard's record."""
    first = next((p.results for p in run.parts if p.results is not None), None)
    env = copy.deepcopy(first["environment"]) if first is not None else {}
    shard = env.pop("shard", None)
    env["merged_from"] = [str(p.source) for p in run.parts]
    if shard is not None:
        members = []
        for p in run.parts:
            assert p.results is not None
            info = dict(p.results["environment"]["shard"])
            calibration = p.results.get("calibration") or {}
            info.update(source=str(p.source), complete=p.results["complete"],
                        ceiling_qps=calibration.get("ceiling_qps"))  # fmt: skip
            members.append(info)
        env["shards"] = {"count": shard["count"], "start_at": shard["start_at"], "members": members}
    return env


def write_run_dir(run: MergedRun, out: Path) -> ResultsDoc | None:
    """results.json, summary.csv, report.html and histograms.json of the merged run in ``out``; None (histograms
    only) when the inputs carried no settings to judge with."""
    from tailmark.client.report import write_reports

    out.mkdir(parents=True, exist_ok=True)
    run.write_histograms(out / HISTOGRAMS)
    if run.tokens is not None:
        write_tokens(out, run.tokens)
    if not run.scenarios:
        return None
    # shards: their check says what is missing or partial (the same in every scenario); other runs: each partial one
    why = list(dict.fromkeys(c.detail for s in run.scenarios for c in s.verdict.checks
                             if c.name == "shards" and not c.passed)) or [
        f"{p.source}: {p.results['interrupted'] or 'not complete'}" for p in run.parts
        if p.results is not None and not p.results["complete"]
    ]  # fmt: skip
    result = RunResult(environment=merged_environment(run), scenarios=list(run.scenarios), complete=not why,
                       interrupted="; ".join(why) or None)  # fmt: skip
    doc = result.write(out / "results.json")
    write_reports(doc, out)
    return doc
