"""Read back what a result file says, as MLPerf's result summarizer and RCP checker do.

The log, not the process that wrote it, is the record: time to train is ``run_stop - run_start`` in the log's own
milliseconds, and epochs to converge is the ``epoch_num`` of the last ``eval_accuracy`` before a successful stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = ":::MLLOG "


@dataclass(frozen=True, slots=True)
class LoggedRun:
    benchmark: str | None
    seed: int | None
    global_batch_size: int | None
    run_start_ms: int | None
    run_stop_ms: int | None
    status: str | None  # "success", "aborted", or None when the run never stopped (crash, interrupt)
    last_epoch: int | None  # epoch_num of the last eval_accuracy
    accuracy: float | None  # the last eval_accuracy
    evals: tuple[tuple[int, float], ...]  # (epoch_num, eval_accuracy)

    @property
    def converged(self) -> bool:
        return self.status == "success"

    @property
    def time_to_train_s(self) -> float | None:
        if self.run_start_ms is None or self.run_stop_ms is None:
            return None
        return (self.run_stop_ms - self.run_start_ms) / 1000.0

    @property
    def epochs_to_converge(self) -> int | None:
        return self.last_epoch if self.converged else None


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every ``:::MLLOG`` record in ``path``; other lines are skipped, as the checker skips them."""
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith(PREFIX):
                records.append(json.loads(line[len(PREFIX) :]))
    return records


def parse_result(path: Path) -> LoggedRun:
    values: dict[str, Any] = {}
    run_start = run_stop = status = None
    evals: list[tuple[int, float]] = []
    for record in read_lines(path):
        key = record["key"]
        if key == "run_start":
            run_start = record["time_ms"]
        elif key == "run_stop":
            run_stop, status = record["time_ms"], record["metadata"].get("status")
        elif key == "eval_accuracy":
            evals.append((int(record["metadata"]["epoch_num"]), float(record["value"])))
        else:
            values.setdefault(key, record["value"])
    last_epoch, accuracy = evals[-1] if evals else (None, None)
    return LoggedRun(
        benchmark=values.get("submission_benchmark"),
        seed=values.get("seed"),
        global_batch_size=values.get("global_batch_size"),
        run_start_ms=run_start,
        run_stop_ms=run_stop,
        status=status,
        last_epoch=last_epoch,
        accuracy=accuracy,
        evals=tuple(evals),
    )
