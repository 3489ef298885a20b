"""smoke: a small CNN on scikit-learn's bundled 8x8 digits, to 98 % top-1. Sized for CI (about a second a run)."""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tailmark.training.workload import DataMissing, Servable, Trainer, Workload, WorkloadSpec
from tailmark.training.workloads import standard_hparams

if TYPE_CHECKING:
    from torch import nn

    from tailmark.training.classification import Split
    from tailmark.training.context import RunContext

DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
INSTALL = "pip install scikit-learn"
EVAL_FRACTION = 0.2
SPLIT_SEED = 0  # the train/eval split is part of the data set, fixed across runs


@dataclass(frozen=True, slots=True)
class DigitsHparams:
    global_batch_size: int = 64  # tunable
    learning_rate: float = 3e-3  # tunable
    channels: int = 16  # width of the first block (then x2, x4)


def digits_file() -> Path:
    """The digits CSV inside the installed scikit-learn, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataMissing(f"scikit-learn's bundled digits not found: install it with `{INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataMissing(f"{path} is missing: reinstall scikit-learn with `{INSTALL}`")
    return path


def load_split(path: Path) -> Split:
    """Read the 1,797 digits; a fixed stratified 80/20 split; pixels scaled to [0, 1]."""
    import torch

    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images, labels = table[:, :64] / 16.0, table[:, 64].astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    eval_mask = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        eval_mask[members[: round(len(members) * EVAL_FRACTION)]] = True
    x = torch.from_numpy(images).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(labels)
    train, held = torch.from_numpy(~eval_mask), torch.from_numpy(eval_mask)
    return x[train], y[train], x[held], y[held]


class DigitsWorkload(Workload):
    spec: ClassVar[WorkloadSpec] = WorkloadSpec(
        name="smoke", benchmark="digits_cnn", metric="top1", target=0.98, eval_every_epochs=1, max_epochs=30
    )
    tunable: ClassVar[frozenset[str]] = frozenset({"global_batch_size", "learning_rate"})

    @classmethod
    def default_hparams(cls) -> DigitsHparams:
        return DigitsHparams()

    def data_files(self) -> dict[Path, str]:
        return {digits_file(): DIGITS_SHA256}

    def logged_hparams(self) -> dict[str, Any]:
        return standard_hparams(self.hparams.global_batch_size, "adam", self.hparams.learning_rate)

    def model(self) -> nn.Module:
        from tailmark.models.digits_cnn import DigitsCNN

        c = self.hparams.channels
        return DigitsCNN(channels=(c, 2 * c, 4 * c))

    def servable(self) -> Servable:
        # the loader's pixels (0..16 scaled by 1/16) are already in [0, 1]: nothing to normalise
        return Servable(self.model, input_shape=(1, 8, 8), output_shape=(10,))

    def build(self, ctx: RunContext) -> Trainer:
        import torch

        from tailmark.training.classification import ClassifierTrainer

        torch.manual_seed(ctx.seed)
        path = digits_file()
        return ClassifierTrainer(
            ctx,
            self.model(),
            load=lambda: load_split(path),
            global_batch_size=self.hparams.global_batch_size,
            learning_rate=self.hparams.learning_rate,
        )


WORKLOAD = DigitsWorkload
