"""Export reference models to the files servers load: TorchScript, ONNX, and TensorRT plans.

ONNX export uses torch's TorchScript-based exporter (``dynamo=False``): it needs no extra package and
takes half a second here; where a torch release has dropped it, the dynamo exporter (which needs
``onnxscript``) is used instead. Both give the batch dimension a symbolic size. TensorRT is imported
only to build a plan; it has no wheels on PyPI, so ``tensorrt_available()`` is usually False here.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReferenceModel:
    """A model from models/ as a server sees it: one FP32 input, one FP32 output, a batch dimension."""

    build: Callable[[int], torch.nn.Module]  # seed -> module in eval mode
    input_shape: Shape  # without the batch dimension
    output_shape: Shape
    input_name: str = "input"
    output_name: str = "logits"


def _resnet(seed: int) -> torch.nn.Module:
    from tailmark.models import resnet

    return resnet.build(seed=seed)


def _digits_cnn(seed: int) -> torch.nn.Module:
    from tailmark.models.digits_cnn import DigitsCNN

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = DigitsCNN().eval()
    torch.random.set_rng_state(state)
    return model


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    "resnet": ReferenceModel(_resnet, (3, 32, 32), (10,)),
    "digits_cnn": ReferenceModel(_digits_cnn, (1, 8, 8), (10,)),
}


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)
    return path


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Trace ``model`` on ``example`` and save it; the traced module accepts any batch size."""
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still the loadable format
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
    return _atomic(path, lambda tmp: traced.save(str(tmp)))


def export_onnx(
    model: torch.nn.Module, example: torch.Tensor, path: Path, *, input_name: str = "input", output_name: str = "logits"
) -> Path:
    """Write ``model`` as ONNX with a symbolic batch dimension on its input and output."""
    model = model.eval()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                    opset_version=17,
                    dynamo=False,
                )
            except (TypeError, NotImplementedError, RuntimeError):  # a torch without the TorchScript exporter
                batch = torch.export.Dim("batch", min=1, max=65536)
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_shapes=({0: batch},),
                    dynamo=True,
                )

    return _atomic(path, write)


# --- TensorRT ---


def profile_shapes(
    inputs: dict[str, Shape], max_batch_size: int, preferred: tuple[int, ...] = ()
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) per input for one profile over batch 1..max_batch_size; opt = largest preferred size.

    ``inputs`` maps names to shapes without the batch dimension, which must be fixed (a profile needs
    their range). With max_batch_size 0 (no batching) the shapes are used as they are.
    """
    opt = max(preferred) if preferred else max_batch_size
    profiles = {}
    for name, dims in inputs.items():
        if any(d < 0 for d in dims):
            raise ValueError(f"input {name!r}: TensorRT profiles need fixed non-batch dims, got {list(dims)}")
        if max_batch_size > 0:
            profiles[name] = ((1, *dims), (min(opt, max_batch_size), *dims), (max_batch_size, *dims))
        else:
            profiles[name] = (tuple(dims), tuple(dims), tuple(dims))
    return profiles


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def build_tensorrt_plan(
    onnx_path: Path,
    plan_path: Path,
    profiles: dict[str, tuple[Shape, Shape, Shape]],
    *,
    fp16: bool = False,
    workspace_bytes: int = 1 << 30,
) -> Path:
    """Parse ONNX, build a serialized engine with one optimization profile, and write it.

    TensorRT 11 removed the weak-typing precision flags: ``fp16`` is honoured only where
    ``BuilderFlag.FP16`` still exists (10.x); on 11.x the ONNX file's own types decide.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since 10.0
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profiles.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
    return _atomic(plan_path, lambda tmp: tmp.write_bytes(memoryview(plan)))


# --- repositories ---


@dataclass(frozen=True, slots=True)
class Batching:
    """The scheduling written into each config.pbtxt (the same for tailmark and for Triton)."""

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 500
    dynamic: bool = True
    instances: int = 1
    gpu: bool = False

    def pbtxt(self) -> str:
        kind = "KIND_GPU" if self.gpu else "KIND_CPU"
        text = f"max_batch_size: {self.max_batch_size}\ninstance_group [ {{ kind: {kind} count: {self.instances} }} ]\n"
        if self.dynamic and self.max_batch_size > 0:
            preferred = ", ".join(str(size) for size in self.preferred_batch_sizes)
            text += "dynamic_batching {\n"
            if preferred:
                text += f"  preferred_batch_size: [ {preferred} ]\n"
            text += f"  max_queue_delay_microseconds: {self.max_queue_delay_us}\n}}\n"
        return text


def _dims(shape: Shape) -> str:
    return ", ".join(str(d) for d in shape)


def model_config(name: str, head: str, reference: ReferenceModel, batching: Batching, extra: str = "") -> str:
    """config.pbtxt text; ``head`` names the runtime (``platform: "..."`` or ``backend: "..."``)."""
    tensor = '{kind} [ {{ name: "{name}" data_type: TYPE_FP32 dims: [ {dims} ] }} ]\n'
    return (
        f'name: "{name}"\n{head}\n{batching.pbtxt()}'
        + tensor.format(kind="input", name=reference.input_name, dims=_dims(reference.input_shape))
        + tensor.format(kind="output", name=reference.output_name, dims=_dims(reference.output_shape))
        + extra
    )


def write_config(model_dir: Path, text: str) -> Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    return _atomic(model_dir / "config.pbtxt", lambda tmp: tmp.write_text(text))


def export_reference(
    name: str,
    repository: Path,
    batching: Batching,
    *,
    formats: tuple[str, ...] = ("torchscript", "onnx"),
    seed: int = 0,
) -> list[Path]:
    """Write ``name`` into a tailmark repository: ``<name>`` (TorchScript), ``<name>_onnx`` (ONNX Runtime)
    and ``<name>_trt`` (TensorRT plan, only where TensorRT and CUDA exist). Returns the model folders."""
    reference = REFERENCE_MODELS[name]
    model = reference.build(seed)
    example = torch.zeros(1, *reference.input_shape)
    written = []
    if "torchscript" in formats:
        model_dir = repository / name
        export_torchscript(model, example, model_dir / "1" / "model.pt")
        written.append(write_config(model_dir, model_config(name, 'platform: "pytorch_libtorch"', reference, batching)))
    onnx_path = None
    if "onnx" in formats or "tensorrt" in formats:
        model_dir = repository / f"{name}_onnx"
        onnx_path = export_onnx(
            model,
            example,
            model_dir / "1" / "model.onnx",
            input_name=reference.input_name,
            output_name=reference.output_name,
        )
        head = 'platform: "onnxruntime_onnx"'
        written.append(write_config(model_dir, model_config(f"{name}_onnx", head, reference, batching)))
    if "tensorrt" in formats and onnx_path is not None and tensorrt_available():
        model_dir = repository / f"{name}_trt"
        profiles = profile_shapes(
            {reference.input_name: reference.input_shape}, batching.max_batch_size, batching.preferred_batch_sizes
        )
        build_tensorrt_plan(onnx_path, model_dir / "1" / "model.plan", profiles)
        gpu = dataclasses.replace(batching, gpu=True)
        written.append(
            write_config(model_dir, model_config(f"{name}_trt", 'platform: "tensorrt_plan"', reference, gpu))
        )
    return [path.parent for path in written]


def identity_config(head: str, extra: str = "") -> str:
    """The identity model both servers get: FP32 of any length, no batching (so any request shape works)."""
    return (
        f'name: "identity"\n{head}\nmax_batch_size: 0\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
        f"{extra}"
    )
