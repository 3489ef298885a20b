"""What a workload is: data on disk, a model, a quality target, an eval cadence and hyperparameters.

A ``Workload`` is cheap to construct (no torch import) so the CLI can list and check workloads quickly. Its
``build(ctx)`` runs inside the untimed initialisation and returns a ``Trainer``, whose ``load_data`` is the first
thing on the clock: MLPerf's rule that the clock starts before any part of the system touches the dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from tailmark.training.context import RunContext


class DataMissing(Exception):
    """A data set is not installed; the message names the command that installs it."""


class DataCorrupt(Exception):
    """A data file's checksum does not match the pinned one."""


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The fixed facts of a workload: its names, target and timing cadence."""

    name: str  # the CLI name: smoke, vision, recommendation, translation
    benchmark: str  # submission_benchmark in the logs and the folder in results/<system>/
    metric: str  # what eval_accuracy measures, e.g. "top1", "hr@10", "exact_match"
    target: float  # the clock stops at the first evaluation at or above this
    eval_every_epochs: int  # evaluation cadence, on the clock
    max_epochs: int  # a run that has not converged by then stops with status "aborted"


@dataclass(frozen=True, slots=True)
class DataSizes:
    """How many samples one epoch trains on and one evaluation scores (logged as train/eval_samples)."""

    train_samples: int
    eval_samples: int


@dataclass(frozen=True, slots=True)
class Servable:
    """How a workload's trained model is served (training/serve.py exports it).

    The served model takes one FP32 tensor ``input`` of ``input_shape`` (plus a batch dimension) as a client holds
    the data: pixels scaled to [0, 1]. The workload's own input normalisation is baked into the exported module, so
    a client needs no training statistics. It answers ``logits`` of ``output_shape``.
    """

    architecture: Callable[[], nn.Module]  # the untrained model with this workload's hyperparameters
    input_shape: tuple[int, ...]  # without the batch dimension
    output_shape: tuple[int, ...]
    input_mean: float = 0.0  # subtracted from the [0, 1] input, as the workload's data loader does
    input_std: float = 1.0  # then divided by


class Trainer(ABC):
    """One run's model, optimiser and data, built during the untimed initialisation."""

    model: nn.Module  # what trains: wrapped in DistributedDataParallel when the run has several processes

    @abstractmethod
    def load_data(self) -> DataSizes:
        """Read the data set from disk (on the clock)."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> None:
        """Train for one epoch; ``epoch`` counts from 1."""

    @abstractmethod
    def evaluate(self) -> float:
        """Score the model on the whole evaluation set, identical on every rank."""

    def state_dict(self) -> dict[str, Any]:
        """The trained weights, unwrapped from DistributedDataParallel."""
        from tailmark.training.context import unwrap

        return unwrap(self.model).state_dict()


class Workload(ABC):
    """A reference workload. Subclasses set ``spec``, ``hparams`` and ``tunable``."""

    spec: ClassVar[WorkloadSpec]
    tunable: ClassVar[frozenset[str]]  # the hyperparameters a closed-division run may change

    def __init__(self, hparams: Any) -> None:
        self.hparams = hparams

    @classmethod
    @abstractmethod
    def default_hparams(cls) -> Any:
        """The reference hyperparameters (a frozen dataclass)."""

    @abstractmethod
    def data_files(self) -> dict[Path, str]:
        """The data set's files and their pinned sha256; raises ``DataMissing`` with the install command."""

    @abstractmethod
    def build(self, ctx: RunContext) -> Trainer:
        """Construct the model and optimiser (untimed initialisation); must not read the data set."""

    def logged_hparams(self) -> Mapping[str, Any]:
        """Hyperparameters to log as mllog keys (global_batch_size, opt_name, ...), beyond the standard set."""
        return {}

    def servable(self) -> Servable | None:
        """How the trained model is exported for ``tailmark serve``; None where it is not (yet) servable."""
        return None

    def export_model(self, weights: Path, repository: Path, name: str | None = None) -> Path | None:
        """Export a model that is not a one-tensor ``Servable`` (e.g. a language model) in a layout of its own;
        returns the model folder, or None where the workload has no such export."""
        return None

    def exportable(self) -> bool:
        """Whether ``--export-to`` can export this workload's trained model."""
        return self.servable() is not None

    def verify_data(self) -> None:
        """The reference ``verify_dataset`` step: every file present and matching its checksum."""
        for path, expected in self.data_files().items():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != expected:
                raise DataCorrupt(f"{path}: sha256 {digest[:12]}… does not match the pinned {expected[:12]}…")


def with_overrides(workload_cls: type[Workload], overrides: Mapping[str, str]) -> tuple[Workload, bool]:
    """Build a workload with hyperparameter overrides given as strings; returns it and whether it stays closed.

    Changing a hyperparameter outside ``tunable`` is allowed, but moves the result to the open division.
    """
    defaults = workload_cls.default_hparams()
    fields = {f.name: f for f in dataclasses.fields(defaults)}
    changes: dict[str, Any] = {}
    for key, text in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown hyperparameter {key!r}; known: {', '.join(sorted(fields))}")
        kind = type(getattr(defaults, key))
        try:
            changes[key] = kind(text)
        except ValueError:
            raise ValueError(f"hyperparameter {key}={text!r}; must be a {kind.__name__}") from None
    closed = set(changes) <= workload_cls.tunable
    return workload_cls(dataclasses.replace(defaults, **changes)), closed
