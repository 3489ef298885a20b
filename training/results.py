"""The result of ``tailmark train``: settings, one record per run, the olympic score, the RCP verdict, warnings.

Written as versioned JSON, atomically (temp file + rename), after every run, so an interrupted set keeps the runs
measured so far.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailmark.training.rcp import RcpVerdict
from tailmark.training.scoring import Score

if TYPE_CHECKING:
    from tailmark.training.serve import ServedModel

SCHEMA = "tailmark.train/1"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run: what its log says, and what the machine did meanwhile (measured by the parent process)."""

    index: int
    log: str  # result_<i>.txt
    status: str | None  # "success", "aborted", or None when the run died before run_stop
    epochs: int | None  # epoch_num of the last evaluation
    accuracy: float | None  # the last evaluation
    time_to_train_s: float | None  # run_stop - run_start from the log; None unless converged
    seed: int | None
    wall_s: float  # the whole process, initialisation included
    cpu_s: float  # user + system CPU of the run's processes (every rank)
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float]
    exit_code: int
    model: str | None = None  # the converged model's state_dict (torch.load(..., weights_only=True))
    compliance: str | None = None  # the stock compliance checker's verdict on the log: SUCCESS or FAILED

    @property
    def converged(self) -> bool:
        return self.status == "success"


@dataclass(slots=True)
class TrainResult:
    workload: str
    benchmark: str
    metric: str
    target: float
    system: str
    division: str
    nproc: int
    runs_planned: int
    settings: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)
    score: Score | None = None
    rcp: RcpVerdict | None = None
    served: ServedModel | None = None  # --export-to: the model exported into a serving repository
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA
        if self.score is not None:
            data["score"]["minutes"] = self.score.minutes
        return data

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
