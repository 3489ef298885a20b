"""Export reference models to the files servers load (TorchScript today; ONNX/TensorRT later)."""

from __future__ import annotations

from pathlib import Path

import torch


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Trace ``model`` on ``example`` and save it; the traced module accepts any batch size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    traced.save(str(tmp))
    tmp.replace(path)
    return path
