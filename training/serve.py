"""Train → serve: a converged model exported into a model repository that ``tailmark serve`` loads.

    <repository>/<benchmark>/config.pbtxt    platform "pytorch_libtorch", input "input" FP32, output "logits"
    <repository>/<benchmark>/1/model.pt      TorchScript (traced), any batch size up to max_batch_size

The repository is Triton's layout, written with the same helpers as ``tailmark export`` (models/export.py). The
served module takes the data as a client holds it, pixels scaled to [0, 1]; the workload's input normalisation
(``Servable.input_mean``/``input_std``) is traced into it. Other models go into the same repository beside it,
so one ``tailmark serve --model-repository REPO`` serves the trained model with the rest.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tailmark.training.workload import Workload

TORCHSCRIPT_HEAD = 'platform: "pytorch_libtorch"'


class ExportError(Exception):
    """The trained model cannot be exported (not servable, or the weights do not fit the workload's model)."""


@dataclass(frozen=True, slots=True)
class ServedModel:
    """Where a trained model went, and what training measured for it (recorded in the result JSON)."""

    repository: str
    name: str  # the model's name in the repository, and in requests
    weights: str  # the state_dict it came from
    run_index: int | None  # the run of the set that trained it; None for --from-weights
    accuracy: float | None  # that run's last evaluation (the harness's eval accuracy)


class Standardize(nn.Module):
    """``model((x - mean) / std)``: the workload's input normalisation, inside the served module."""

    def __init__(self, model: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = mean, std

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


def load_trained(workload: Workload, weights: Path) -> nn.Module:
    """The workload's servable model with ``weights`` loaded, normalisation included, in eval mode."""
    servable = workload.servable()
    if servable is None:
        raise ExportError(f"workload {workload.spec.name}: its model cannot be served yet (only smoke and vision)")
    if not weights.is_file():
        raise ExportError(f"{weights}: no such file")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ExportError(f"{weights}: not a state_dict torch can load ({str(exc).splitlines()[0]})") from None
    model = servable.architecture()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise ExportError(f"{weights}: does not fit the {workload.spec.name} model ({type(model).__name__})") from None
    if servable.input_mean != 0.0 or servable.input_std != 1.0:
        model = Standardize(model, servable.input_mean, servable.input_std)
    return model.eval()


def export_trained(
    workload: Workload,
    weights: Path,
    repository: Path,
    *,
    name: str | None = None,
    max_batch_size: int = 8,
) -> Path:
    """Write ``weights`` (a state_dict of ``workload``'s model) into ``repository`` as TorchScript; returns the
    model folder. Raises ``ExportError`` with a one-line message."""
    from tailmark.models.export import Batching, ReferenceModel, export_torchscript, model_config, write_config

    exported = workload.export_model(weights, repository, name)
    if exported is not None:
        return exported
    servable = workload.servable()
    model = load_trained(workload, weights)
    assert servable is not None  # load_trained refused otherwise
    name = name or workload.spec.benchmark
    reference = ReferenceModel(lambda _seed: model, servable.input_shape, servable.output_shape)
    model_dir = repository / name
    export_torchscript(model, torch.zeros(1, *servable.input_shape), model_dir / "1" / "model.pt")
    config = model_config(name, TORCHSCRIPT_HEAD, reference, Batching(max_batch_size=max_batch_size))
    write_config(model_dir, config)
    return model_dir
