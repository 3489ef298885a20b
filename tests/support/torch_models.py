"""A repository of the reference ResNet (TorchScript) under several configs, loaded in this process."""

from __future__ import annotations

import torch

from tailmark.models import export, resnet
from tailmark.server.default_repository import write_model
from tailmark.server.repository import Repository


def resnet_repository(tmp_path, device_kind: str = "KIND_CPU", **configs: str) -> Repository:
    """One model per ``name=config text``, each with the same TorchScript file; instance kinds set to
    ``device_kind``. The caller closes it."""
    model_file = export.export_torchscript(resnet.build(seed=0), torch.zeros(1, 3, 32, 32), tmp_path / "resnet.pt")
    for name, text in configs.items():
        folder = write_model(tmp_path / "repo", name, text.replace("KIND_CPU", device_kind))
        (folder / "1" / "model.pt").write_bytes(model_file.read_bytes())
    repository = Repository(tmp_path / "repo")
    repository.load_all()
    return repository
