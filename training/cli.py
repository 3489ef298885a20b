"""``tailmark train WORKLOAD``: time a reference workload to its quality target, N times, MLPerf style."""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tailmark.training.workloads import WORKLOADS

if TYPE_CHECKING:
    from tailmark.training.results import TrainResult
    from tailmark.training.workload import Workload


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="time a reference model to its accuracy target (MLPerf Training rules)",
        description="Train WORKLOAD from fresh seeds to its quality target N times; report the olympic mean time.",
    )
    parser.add_argument("workload", choices=sorted(WORKLOADS), help="what to train")
    parser.add_argument("--runs", type=int, default=5, help="runs in the set (default 5)")
    parser.add_argument("--nproc", type=int, default=1, help="data-parallel processes per run, via torchrun")
    parser.add_argument("--output", type=Path, default=Path("runs/train"), help="output folder (default runs/train)")
    parser.add_argument("--system", default=None, help="system name in results/<system>/ (default: host name)")
    parser.add_argument("--max-epochs", type=int, default=None, help="abort a run after this many epochs")
    parser.add_argument("--seed", type=int, default=None, help="fix run i's seed to SEED+i (open division)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    parser.add_argument("--no-save-model", action="store_true", help="do not keep converged weights")
    rcp = parser.add_mutually_exclusive_group()
    rcp.add_argument(
        "--write-rcp",
        type=Path,
        default=None,
        metavar="JSON",
        help="store this set's epochs to converge as reference convergence points",
    )
    rcp.add_argument(
        "--append-rcp",
        type=Path,
        default=None,
        metavar="JSON",
        help="add this set's epochs to converge to the reference convergence points in JSON (created if absent)",
    )
    parser.add_argument(
        "--rcp-from",
        type=Path,
        action="append",
        default=None,
        metavar="RESULT_JSON",
        help="do not train: take the converged runs of sets already run (their DIR/<benchmark>.json) as the points"
        " for --write-rcp/--append-rcp",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where runs train (default auto: CUDA when torch sees a device, else CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    serve = parser.add_argument_group("train -> serve (smoke, vision, lm)")
    serve.add_argument(
        "--export-to",
        type=Path,
        default=None,
        metavar="REPO",
        help="after the set, export the first converged run's model into the model repository REPO"
        " (REPO/<benchmark>/, TorchScript) for `tailmark serve --model-repository REPO`",
    )
    serve.add_argument(
        "--from-weights",
        type=Path,
        default=None,
        metavar="PT",
        help="do not train: export this state_dict (e.g. DIR/models/<benchmark>/run_<i>.pt) with --export-to",
    )
    parser.set_defaults(handler=handle_train)


def default_system(nproc: int) -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", platform.node() or "host")
    return f"{host}_{nproc}proc"


def handle_train(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.training.report import format_run, format_summary
    from tailmark.training.runner import RunFailed, TrainSettings, run_set
    from tailmark.training.workload import DataCorrupt, DataMissing, with_overrides
    from tailmark.training.workloads import workload_class

    checked = {"--runs": args.runs, "--nproc": args.nproc, "--max-epochs": args.max_epochs, "--threads": args.threads}
    for flag, value in checked.items():
        if value is not None and value < 1:
            raise UsageError(f"{flag}={value} requested; must be >= 1")
    overrides = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}; expected KEY=VALUE")
        overrides.append((key, value))
    if args.from_weights is not None and args.export_to is None:
        raise UsageError("--from-weights exports a trained model; give the repository with --export-to REPO")
    try:
        workload, closed = with_overrides(workload_class(args.workload), dict(overrides))
        if args.export_to is not None and not workload.exportable():
            exported = "smoke, vision, lm"
            raise ValueError(f"--export-to: the {args.workload} workload's model cannot be served yet ({exported})")
        if args.from_weights is not None:
            return export_weights(workload, args.from_weights, args.export_to)
        if args.rcp_from is not None:
            return reference_from_recorded(args, workload)
        workload.verify_data()
    except (ValueError, DataMissing, DataCorrupt) as exc:
        raise UsageError(str(exc)) from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: torch sees no CUDA device")
    gbs = getattr(workload.hparams, "global_batch_size", args.nproc)
    if gbs % args.nproc:
        raise UsageError(f"--nproc {args.nproc} does not divide the global batch size {gbs}")
    settings = TrainSettings(
        workload=args.workload,
        output_dir=args.output,
        system=args.system or default_system(args.nproc),
        runs=args.runs,
        nproc=args.nproc,
        max_epochs=args.max_epochs,
        seed=args.seed,
        overrides=tuple(overrides),
        threads=args.threads,
        save_model=not args.no_save_model,
        quiet=args.quiet,
        device=args.device,
    )
    json_path = settings.output_dir / f"{workload.spec.benchmark}.json"
    try:
        result = run_set(settings, workload, closed=closed, on_run=lambda r: print(format_run(r, args.runs)))
    except RunFailed as exc:
        print(f"tailmark train: {exc}", file=sys.stderr)
        return 1
    if args.export_to is not None:
        export_converged(result, workload, args.export_to, json_path)
    print("\n".join(format_summary(result, str(json_path))))
    rcp_path = args.write_rcp or args.append_rcp
    if rcp_path is not None:
        points = write_reference(
            result, rcp_path, gbs, command=reproduce_command(args), append=args.append_rcp is not None
        )
        print(f"  reference convergence points: {rcp_path} ({points} runs)")
    return 0 if result.score is not None and result.score.seconds is not None else 1


def export_weights(workload: Workload, weights: Path, repository: Path) -> int:
    """``--from-weights PT --export-to REPO``: export an earlier run's state_dict, no training."""
    from tailmark.cli import UsageError
    from tailmark.training.serve import ExportError, export_trained

    try:
        model_dir = export_trained(workload, weights, repository)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    command = serve_command(repository)
    if workload.servable() is None:  # a generative model (lm): served on the OpenAI routes (docs/lm.md)
        command += " --http-port 8000"
    print(f"tailmark train: exported {weights} to {model_dir}; serve it with `{command}`")
    return 0


def export_converged(result: TrainResult, workload: Workload, repository: Path, json_path: Path) -> None:
    """Export the first converged run's weights into ``repository`` and record it in the result."""
    from tailmark.training.serve import ServedModel, export_trained

    run = next((r for r in result.runs if r.converged and r.model is not None), None)
    if run is None:
        result.warnings.append(f"no converged run with saved weights; nothing exported to {repository}")
        result.write(json_path)
        return
    model_dir = export_trained(workload, Path(run.model), repository)
    result.served = ServedModel(str(repository), model_dir.name, run.model, run.index, run.accuracy)
    result.write(json_path)


def serve_command(repository: Path) -> str:
    return f"tailmark serve --model-repository {repository}"


def reproduce_command(args: argparse.Namespace) -> str:
    parts = ["tailmark train", args.workload, f"--runs {args.runs}", f"--nproc {args.nproc}"]
    parts += [f"--set {item}" for item in args.set]
    if args.seed is not None:
        parts.append(f"--seed {args.seed}")
    if args.threads is not None:
        parts.append(f"--threads {args.threads}")
    if args.append_rcp is not None:
        return " ".join(parts) + f" --append-rcp {args.append_rcp}"
    return " ".join(parts) + f" --write-rcp {args.write_rcp}"


def reference_from_recorded(args: argparse.Namespace, workload: Workload) -> int:
    """``--rcp-from RESULT_JSON ... --append-rcp JSON``: reference points from sets already run, no training."""
    from tailmark.cli import UsageError
    from tailmark.training.rcp_recorded import RecordedSetError, load_recorded_set

    rcp_path = args.write_rcp or args.append_rcp
    if rcp_path is None:
        raise UsageError("--rcp-from: say where the points go with --write-rcp JSON or --append-rcp JSON")
    append = args.append_rcp is not None
    gbs = getattr(workload.hparams, "global_batch_size", 1)
    for index, path in enumerate(args.rcp_from):
        try:
            result, command = load_recorded_set(path, args.workload, workload)
        except RecordedSetError as exc:
            raise UsageError(str(exc)) from None
        points = write_reference(result, rcp_path, gbs, command=command, append=append or index > 0)
        print(f"tailmark train: {path}: {result.runs_planned} planned, {len(result.runs)} recorded runs")
    print(f"  reference convergence points: {rcp_path} ({points} runs)")
    return 0


def write_reference(
    result: TrainResult, path: Path, global_batch_size: int, *, command: str, append: bool = False
) -> int:
    """Store the set's epochs to converge (after those already in ``path`` when appending); returns the count.

    Appending keeps one file per benchmark and global batch, and joins the sets' commands with "; "."""
    from tailmark.cli import UsageError
    from tailmark.training.rcp import ReferencePoints

    epochs = tuple(r.epochs for r in result.runs if r.converged and r.epochs is not None)
    earlier: tuple[int, ...] = ()
    if append and path.is_file():
        previous = ReferencePoints.load(path)
        if (previous.benchmark, previous.global_batch_size) != (result.benchmark, global_batch_size):
            raise UsageError(
                f"--append-rcp {path}: holds {previous.benchmark} at global batch {previous.global_batch_size},"
                f" not {result.benchmark} at {global_batch_size}"
            )
        earlier, command = previous.epochs_to_converge, f"{previous.command}; {command}"
    if len(earlier) + len(epochs) < 3:
        raise UsageError(f"{len(epochs)} converged runs; reference convergence points need at least 3")
    ReferencePoints(
        benchmark=result.benchmark,
        global_batch_size=global_batch_size,
        epochs_to_converge=earlier + epochs,
        command=command,
        platform=f"{platform.machine()} {platform.processor() or ''}".strip() + f", {result.nproc} process(es)",
        created=datetime.date.today().isoformat(),
    ).save(path)
    return len(earlier) + len(epochs)
