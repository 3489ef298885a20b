"""The workloads ``tailmark train`` knows, by CLI name. Each is a subpackage imported only when chosen."""

from __future__ import annotations

import importlib

from tailmark.training.workload import Workload

WORKLOADS: dict[str, str] = {
    "lm": "tailmark.training.workloads.lm",
    "smoke": "tailmark.training.workloads.smoke",
    "vision": "tailmark.training.workloads.vision",
    "recommendation": "tailmark.training.workloads.recommendation",
    "translation": "tailmark.training.workloads.translation",
    "translation-smoke": "tailmark.training.workloads.translation_smoke",
}


def workload_class(name: str) -> type[Workload]:
    """The ``Workload`` subclass registered as ``name``; ``KeyError`` for an unknown name."""
    module = importlib.import_module(WORKLOADS[name])
    return module.WORKLOAD


def standard_hparams(
    global_batch_size: int, opt_name: str, learning_rate: float, warmup_steps: int | None = None
) -> dict[str, object]:
    """The hyperparameter keys every workload logs, in MLPerf's vocabulary (the warm-up only for a schedule that
    has one)."""
    from tailmark.training.mlperf_log import C

    logged: dict[str, object] = {
        C.GLOBAL_BATCH_SIZE: global_batch_size,
        C.GRADIENT_ACCUMULATION_STEPS: 1,
        C.OPT_NAME: opt_name,
        C.OPT_BASE_LR: learning_rate,
    }
    if warmup_steps is not None:
        logged[C.OPT_LR_WARMUP_STEPS] = warmup_steps
    return logged
