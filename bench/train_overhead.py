"""What the training harness costs: MLPerf logging, eval bookkeeping and timing, against a bare loop.

Both sides train the same workload from the same seed in this process, alternating, and time from the first touch
of the data to the first evaluation at or above the target (the harness's run_start..run_stop). The ratio printed
is the harness's time over the bare loop's (median, and best of each side: on a shared machine the best runs are
the least disturbed). Noise between two runs of the same loop is often larger than 1 %, so the harness's own work
is also measured directly: the time spent inside its logging calls, as a share of time-to-train.

    nice -n 10 python bench/train_overhead.py --workload smoke --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tailmark.training.mlperf_log import RunLog
from tailmark.training.workload import Workload


def bare_loop(workload: Workload, seed: int, max_epochs: int) -> tuple[float, int]:
    from tailmark.training.context import RunContext

    trainer = workload.build(RunContext(seed=seed))
    started = time.perf_counter()
    trainer.load_data()
    for epoch in range(1, max_epochs + 1):
        trainer.train_epoch(epoch)
        if epoch % workload.spec.eval_every_epochs == 0 and trainer.evaluate() >= workload.spec.target:
            break
    return time.perf_counter() - started, epoch


class TimedLog(RunLog):
    """A RunLog that adds up the time spent in its own calls."""

    spent_s = 0.0

    def _timed(self, method: str, *args: object, **kwargs: object) -> None:
        started = time.perf_counter()
        getattr(super(), method)(*args, **kwargs)
        self.spent_s += time.perf_counter() - started

    def event(self, *args: object, **kwargs: object) -> None:
        self._timed("event", *args, **kwargs)

    def start(self, *args: object, **kwargs: object) -> None:
        self._timed("start", *args, **kwargs)

    def end(self, *args: object, **kwargs: object) -> None:
        self._timed("end", *args, **kwargs)


def harness(workload: Workload, seed: int, max_epochs: int, log_path: Path) -> tuple[float, int, float]:
    from tailmark.training.context import RunContext
    from tailmark.training.harness import Submission, run_once

    with TimedLog(log_path) as log:
        outcome, _ = run_once(
            workload, RunContext(seed=seed), log, submission=Submission(system="bench"), max_epochs=max_epochs
        )
    return outcome.time_to_train_s, outcome.epochs, log.spent_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="smoke")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from tailmark.training.workloads import workload_class

    torch.set_num_threads(args.threads)
    cls = workload_class(args.workload)
    workload = cls(cls.default_hparams())
    cap = workload.spec.max_epochs
    with tempfile.TemporaryDirectory() as tmp:
        bare_loop(workload, args.seed, 1)  # warm-up: the first run in a process pays for kernel selection
        bare, timed, logging_share = [], [], []
        for repeat in range(args.repeats):
            b, b_epochs = bare_loop(workload, args.seed, cap)
            h, h_epochs, spent = harness(workload, args.seed, cap, Path(tmp) / f"result_{repeat}.txt")
            if b_epochs != h_epochs:
                print(f"repeat {repeat}: bare loop took {b_epochs} epochs, harness {h_epochs}; not comparable")
                continue
            bare.append(b)
            timed.append(h)
            logging_share.append(spent / h)
            line = f"repeat {repeat}: {h_epochs} epochs, bare {b:.3f} s, harness {h:.3f} s"
            print(f"{line}, logging {1e3 * spent:.2f} ms")
    if not bare:
        raise SystemExit("no comparable repeats")
    b, h = statistics.median(bare), statistics.median(timed)
    print(f"{args.workload}: median bare {b:.3f} s, harness {h:.3f} s, ratio {h / b:.4f}")
    best_b, best_h = min(bare), min(timed)
    print(f"{args.workload}: best bare {best_b:.3f} s, harness {best_h:.3f} s, ratio {best_h / best_b:.4f}")
    share = 100 * statistics.median(logging_share)
    print(f"harness logging: {share:.3f} % of time-to-train (median; goal: overhead <= 1 %)")


if __name__ == "__main__":
    main()
