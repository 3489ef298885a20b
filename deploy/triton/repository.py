"""Write a Triton model repository holding the same models, with the same batching, as tailmark's export.

Layout (Triton's): ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/1/<file>``:

- ``identity``: python backend, echoes its input (tailmark's ``identity`` backend).
- ``<name>``: python backend running ``model.onnx`` with ONNX Runtime: what a CPU-only Triton (such as
  the one inside the nvidia-pytriton wheel, which has only the python backend) can serve.
- ``<name>_onnx``: Triton's onnxruntime backend on the same ``model.onnx``.
- ``<name>_trt``: Triton's tensorrt backend, when a plan was built (TensorRT and CUDA present).
- ``synth-llm``: the default repository's synthetic LLM as a decoupled python-backend model that streams
  tokens with tailmark's timing model and text (generative.py).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from tailmark.models.export import REFERENCE_MODELS, Batching, identity_config, model_config, write_config

PYTHON_MODEL = Path(__file__).with_name("python_model.py")
BACKENDS = ("python", "onnxruntime", "tensorrt", "generative")


def _python(kind: str) -> tuple[str, str]:
    return 'backend: "python"', f'parameters {{ key: "tailmark_kind" value: {{ string_value: "{kind}" }} }}\n'


def write_triton_repository(
    root: Path,
    name: str,
    batching: Batching,
    onnx_path: Path,
    *,
    plan_path: Path | None = None,
    backends: tuple[str, ...] = BACKENDS,
) -> list[Path]:
    """Write the models above under ``root`` (created if needed); returns their folders."""
    reference = REFERENCE_MODELS[name]
    written = []
    if "python" in backends:
        model_dir = root / "identity"
        write_config(model_dir, identity_config(*_python("identity")))
        shutil.copyfile(PYTHON_MODEL, model_dir / "1" / "model.py")
        written.append(model_dir)
        model_dir = root / name
        head, extra = _python("onnx")
        write_config(model_dir, model_config(name, head, reference, batching, extra))
        shutil.copyfile(PYTHON_MODEL, model_dir / "1" / "model.py")
        shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
        written.append(model_dir)
    if "onnxruntime" in backends:
        model_dir = root / f"{name}_onnx"
        write_config(model_dir, model_config(f"{name}_onnx", 'platform: "onnxruntime_onnx"', reference, batching))
        shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
        written.append(model_dir)
    if "tensorrt" in backends and plan_path is not None and plan_path.is_file():
        model_dir = root / f"{name}_trt"
        gpu = dataclasses.replace(batching, gpu=True)
        write_config(model_dir, model_config(f"{name}_trt", 'platform: "tensorrt_plan"', reference, gpu))
        shutil.copyfile(plan_path, model_dir / "1" / "model.plan")
        written.append(model_dir)
    if "generative" in backends:
        from tailmark.deploy.triton.generative import write_synthetic_llm

        written.append(write_synthetic_llm(root))
    return written
