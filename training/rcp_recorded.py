"""Reference convergence points from sets already run: ``tailmark train W --rcp-from DIR/<benchmark>.json``.

A set's result JSON keeps every finished run's epochs to converge (read from its MLPerf log), so reference runs
need not be trained again to become points: a set that ran without ``--append-rcp``, or one stopped before its
last run, gives its converged runs. Only sets that are reference runs count: the workload's benchmark, its
hyperparameters exactly as given now (defaults, or the same ``--set``), and fresh seeds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailmark.training.results import SCHEMA, RunRecord, TrainResult

if TYPE_CHECKING:
    from tailmark.training.workload import Workload


class RecordedSetError(Exception):
    """A result file that cannot give reference points; the message says why."""


def load_recorded_set(path: Path, name: str, workload: Workload) -> tuple[TrainResult, str]:
    """The set in ``path`` (runs that finished) and the command that ran it, checked against ``workload``."""
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecordedSetError(f"--rcp-from {path}: cannot read a result ({exc})") from None
    if raw.get("schema") != SCHEMA:
        raise RecordedSetError(f"--rcp-from {path}: not a tailmark train result (schema {raw.get('schema')!r})")
    benchmark, settings = workload.spec.benchmark, raw["settings"]
    if raw["benchmark"] != benchmark:
        raise RecordedSetError(f"--rcp-from {path}: a {raw['benchmark']} set, not {benchmark}")
    if settings.get("seed") is not None:
        raise RecordedSetError(f"--rcp-from {path}: run with --seed; reference runs draw fresh seeds")
    wanted, recorded = dataclasses.asdict(workload.hparams), settings["hparams"]
    changed = sorted(k for k in wanted.keys() | recorded.keys() if recorded.get(k) != wanted.get(k))
    if changed:
        raise RecordedSetError(f"--rcp-from {path}: hyperparameters differ from this workload's ({', '.join(changed)})")
    runs = [RunRecord(**run) for run in raw["runs"] if run["exit_code"] == 0]
    result = TrainResult(
        workload=raw["workload"],
        benchmark=benchmark,
        metric=raw["metric"],
        target=raw["target"],
        system=raw["system"],
        division=raw["division"],
        nproc=raw["nproc"],
        runs_planned=raw["runs_planned"],
        settings=settings,
        runs=runs,
    )
    return result, recorded_command(name, result, workload)


def recorded_command(name: str, result: TrainResult, workload: Workload) -> str:
    """The ``tailmark train`` command that ran the set, and how its points were added."""
    parts = ["tailmark train", name, f"--runs {result.runs_planned}", f"--nproc {result.nproc}"]
    defaults = dataclasses.asdict(type(workload).default_hparams())
    parts += [f"--set {k}={v}" for k, v in result.settings["hparams"].items() if defaults.get(k) != v]
    if result.settings.get("threads") is not None:
        parts.append(f"--threads {result.settings['threads']}")
    done = len(result.runs)
    stopped = f"{done} of {result.runs_planned} runs, " if done < result.runs_planned else ""
    return " ".join(parts) + f" ({stopped}points added with --rcp-from)"
