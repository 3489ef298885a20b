"""N runs of one workload, each in a fresh process, in MLPerf's result layout.

    <output>/results/<system>/<benchmark>/result_<i>.txt   the MLPerf log of run i
    <output>/models/<benchmark>/run_<i>.pt                   run i's converged weights (a state_dict)
    <output>/<benchmark>.json                                the result: runs, olympic score, RCP verdict

With ``nproc`` > 1 each run is ``torchrun --standalone --nproc_per_node N``. The parent measures what the
machine did during each run (wall time, CPU time of all the run's processes, load average before and after), so
a noisy neighbour shows up in the result instead of silently slowing it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailmark.training import rcp
from tailmark.training.checker import check_log
from tailmark.training.logparse import parse_result
from tailmark.training.results import RunRecord, TrainResult
from tailmark.training.scoring import score_runs
from tailmark.training.workload import Workload


class RunFailed(Exception):
    """A run's process exited with an error."""


@dataclass(frozen=True, slots=True)
class TrainSettings:
    workload: str
    output_dir: Path
    system: str
    # --- the set ---
    runs: int = 5
    nproc: int = 1
    # --- the run ---
    max_epochs: int | None = None  # None: the workload's own cap
    seed: int | None = None  # None: a fresh OS seed per run (closed); else run i uses seed + i (open)
    overrides: tuple[tuple[str, str], ...] = ()
    threads: int | None = None  # torch intra-op threads per process; None: torch's default (torchrun: 1)
    save_model: bool = True
    quiet: bool = False
    device: str = "auto"  # auto: CUDA when torch sees a device, else CPU


def worker_command(settings: TrainSettings, index: int, log: Path, model: Path | None, division: str) -> list[str]:
    launcher = [sys.executable, "-m", "tailmark.training.worker"]
    if settings.nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={settings.nproc}", "-m", "tailmark.training.worker"]
    # (torchrun rejects any argument that is a prefix of one of its own options, such as --log)
    args = ["--workload", settings.workload, "--result-file", str(log), "--system", settings.system]
    args += ["--division", division, "--run-index", str(index), "--runs", str(settings.runs)]
    if settings.max_epochs is not None:
        args += ["--max-epochs", str(settings.max_epochs)]
    if settings.seed is not None:
        args += ["--seed", str(settings.seed + index)]
    for key, value in settings.overrides:
        args += ["--set", f"{key}={value}"]
    if settings.threads is not None:
        args += ["--threads", str(settings.threads)]
    if model is not None:
        args += ["--save-model", str(model)]
    if settings.device != "auto":
        args += ["--device", settings.device]
    if settings.quiet:
        args.append("--quiet")
    return launcher + args


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute_run(settings: TrainSettings, benchmark: str, index: int, division: str) -> RunRecord:
    log = settings.output_dir / "results" / settings.system / benchmark / f"result_{index}.txt"
    model = settings.output_dir / "models" / benchmark / f"run_{index}.pt" if settings.save_model else None
    if model is not None:
        model.unlink(missing_ok=True)
    command = worker_command(settings, index, log, model, division)
    load_start, cpu_start, started = os.getloadavg(), _children_cpu_s(), time.perf_counter()
    exit_code = subprocess.run(command, check=False).returncode
    wall_s, cpu_s = time.perf_counter() - started, _children_cpu_s() - cpu_start
    logged = parse_result(log) if log.is_file() else None
    return RunRecord(
        index=index,
        log=str(log),
        status=logged.status if logged else None,
        epochs=logged.last_epoch if logged else None,
        accuracy=logged.accuracy if logged else None,
        time_to_train_s=logged.time_to_train_s if logged and logged.converged else None,
        seed=logged.seed if logged else None,
        wall_s=wall_s,
        cpu_s=cpu_s,
        loadavg_start=load_start,
        loadavg_end=os.getloadavg(),
        exit_code=exit_code,
        model=str(model) if model is not None and model.is_file() else None,
        compliance=check_log(log, benchmark).verdict if log.is_file() else None,
    )


def noise_warnings(record: RunRecord, cores: int) -> list[str]:
    worst = max(record.loadavg_start[0], record.loadavg_end[0])
    if worst > cores:
        return [f"run {record.index}: load average {worst:.1f} on {cores} cores; other processes competed for CPU"]
    return []


def run_set(
    settings: TrainSettings, workload: Workload, *, closed: bool, on_run: Callable[[RunRecord], None] | None = None
) -> TrainResult:
    """Run the set, writing the result JSON after every run; raises ``RunFailed`` if a run's process fails."""
    spec = workload.spec
    division = "closed" if closed and settings.seed is None else "open"
    result = TrainResult(
        workload=spec.name,
        benchmark=spec.benchmark,
        metric=spec.metric,
        target=spec.target,
        system=settings.system,
        division=division,
        nproc=settings.nproc,
        runs_planned=settings.runs,
        settings={
            "max_epochs": settings.max_epochs or spec.max_epochs,
            "eval_every_epochs": spec.eval_every_epochs,
            "seed": settings.seed,
            "threads": settings.threads,
            "device": settings.device,
            "hparams": {k: getattr(workload.hparams, k) for k in workload.hparams.__dataclass_fields__},
            "tunable": sorted(workload.tunable),
        },
    )
    result_dir = settings.output_dir / "results" / settings.system / spec.benchmark
    for stale in result_dir.glob("result_*.txt"):
        stale.unlink()
    json_path = settings.output_dir / f"{spec.benchmark}.json"
    cores = os.cpu_count() or 1
    for index in range(settings.runs):
        record = execute_run(settings, spec.benchmark, index, division)
        result.runs.append(record)
        result.warnings.extend(noise_warnings(record, cores))
        result.score = score_runs([r.time_to_train_s for r in result.runs])
        result.write(json_path)
        if on_run is not None:
            on_run(record)
        if record.exit_code != 0:
            raise RunFailed(f"run {index} exited with status {record.exit_code}; its log is {record.log}")
    reference = rcp.reference_for(spec.benchmark)
    converged_epochs = [r.epochs for r in result.runs if r.converged and r.epochs is not None]
    gbs = getattr(workload.hparams, "global_batch_size", None)
    if reference is None:
        result.warnings.append(f"no reference convergence points for {spec.benchmark}; RCP check skipped")
    elif reference.global_batch_size != gbs:
        result.warnings.append(f"no reference convergence points at global batch {gbs}; RCP check skipped")
    elif converged_epochs:
        result.rcp = rcp.check(reference, converged_epochs, settings.runs)
    result.write(json_path)
    return result
