"""vision: a small CNN on Fashion-MNIST (Debian's dataset-fashion-mnist), to 90 % top-1 on the 10,000 test images."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tailmark.training.workload import DataMissing, Servable, Trainer, Workload, WorkloadSpec
from tailmark.training.workloads import standard_hparams

if TYPE_CHECKING:
    from tailmark.training.classification import Split
    from tailmark.training.context import RunContext

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
DIR_ENV = "TAILMARK_FASHION_MNIST_DIR"  # where else to look (a copy, or a test's empty folder)
INSTALL = "apt-get install dataset-fashion-mnist"
FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
# data set metadata (allowed without touching the data): mean and stdev of the training pixels in [0, 1]
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530


@dataclass(frozen=True, slots=True)
class FashionHparams:
    global_batch_size: int = 128  # tunable
    learning_rate: float = 2e-3  # tunable


def data_dir() -> Path:
    return Path(os.environ.get(DIR_ENV, DEFAULT_DIR))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic with the rank in its last byte, then one uint32 per dimension)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def load_split(folder: Path) -> Split:
    import torch

    def images(name: str) -> torch.Tensor:
        pixels = torch.from_numpy(read_idx(folder / name).copy()).float().div_(255.0)
        return pixels.sub_(PIXEL_MEAN).div_(PIXEL_STD).unsqueeze(1)

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(folder / name).astype(np.int64))

    return (
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
    )


class FashionWorkload(Workload):
    spec: ClassVar[WorkloadSpec] = WorkloadSpec(
        name="vision", benchmark="fashion_cnn", metric="top1", target=0.90, eval_every_epochs=1, max_epochs=15
    )
    tunable: ClassVar[frozenset[str]] = frozenset({"global_batch_size", "learning_rate"})

    @classmethod
    def default_hparams(cls) -> FashionHparams:
        return FashionHparams()

    def data_files(self) -> dict[Path, str]:
        folder = data_dir()
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise DataMissing(f"Fashion-MNIST not found in {folder} ({missing[0]}): install it with `{INSTALL}`")
        return {folder / name: digest for name, digest in FILES.items()}

    def logged_hparams(self) -> dict[str, Any]:
        return standard_hparams(self.hparams.global_batch_size, "adam", self.hparams.learning_rate)

    def servable(self) -> Servable:
        from tailmark.models.fashion_cnn import FashionCNN

        return Servable(FashionCNN, (1, 28, 28), (10,), input_mean=PIXEL_MEAN, input_std=PIXEL_STD)

    def build(self, ctx: RunContext) -> Trainer:
        import torch

        from tailmark.models.fashion_cnn import FashionCNN
        from tailmark.training.classification import ClassifierTrainer

        torch.manual_seed(ctx.seed)
        folder = data_dir()
        return ClassifierTrainer(
            ctx,
            FashionCNN(),
            load=lambda: load_split(folder),
            global_batch_size=self.hparams.global_batch_size,
            learning_rate=self.hparams.learning_rate,
        )


WORKLOAD = FashionWorkload
