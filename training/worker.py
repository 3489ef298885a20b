"""The process that executes one run: ``python -m tailmark.training.worker`` (alone, or under torchrun).

A fresh process per run is MLPerf's "restart the system" in small: no warm allocator, no cached kernels, no data
left in this process's memory from the previous run. Under torchrun every rank runs this module; rank 0 draws
the seed, writes the log, prints progress and saves the trained weights.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tailmark.training.worker")
    parser.add_argument("--workload", required=True)
    parser.add_argument("--result-file", type=Path, required=True, help="the MLPerf log (result_<i>.txt)")
    parser.add_argument("--system", required=True)
    parser.add_argument("--division", choices=("closed", "open"), default="closed")
    parser.add_argument("--run-index", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="fixed seed (default: fresh from the OS)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter override")
    parser.add_argument("--save-model", type=Path, default=None, help="save the converged model's state_dict here")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from tailmark.training.context import RunContext, draw_seed, init_process_group, shared_seed
    from tailmark.training.harness import EvalPoint, Submission, run_once
    from tailmark.training.mlperf_log import RunLog
    from tailmark.training.workload import with_overrides
    from tailmark.training.workloads import workload_class

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if distributed:
        rank, world_size, device = init_process_group(cuda=cuda)
    else:
        rank, world_size, device = 0, 1, torch.device("cuda" if cuda else "cpu")
    overrides = dict(item.split("=", 1) for item in args.set)
    workload, _ = with_overrides(workload_class(args.workload), overrides)
    seed = shared_seed(draw_seed() if args.seed is None else args.seed, rank, world_size, device)
    ctx = RunContext(seed=seed, rank=rank, world_size=world_size, device=device)
    spec = workload.spec
    epochs_cap = args.max_epochs or spec.max_epochs

    def progress(point: EvalPoint) -> None:
        if ctx.is_main and not args.quiet:
            print(
                f"{spec.name} run {args.run_index + 1}/{args.runs}: epoch {point.epoch}/{epochs_cap}"
                f" {spec.metric} {point.accuracy:.4f} (target {spec.target}) {point.elapsed_s:.1f} s",
                flush=True,
            )

    try:
        with RunLog(args.result_file, enabled=ctx.is_main) as log:
            outcome, trainer = run_once(
                workload,
                ctx,
                log,
                submission=Submission(system=args.system, division=args.division),
                max_epochs=args.max_epochs,
                on_eval=progress,
            )
        if ctx.is_main and outcome.converged and args.save_model is not None:
            args.save_model.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.save_model.with_suffix(".tmp")
            torch.save(trainer.state_dict(), tmp)
            tmp.replace(args.save_model)
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
