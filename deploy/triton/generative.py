"""Generative models as decoupled python-backend models for Triton (``model_transaction_policy { decoupled: true }``).

- ``write_synthetic_llm``: tailmark's synthetic LLM (``backend: "synthetic_llm"``, such as the default
  repository's ``synth-llm``) as ``<name>/1/model.py`` (llm_model.py) with ``synthetic_tokenizer.py`` beside it
  (a copy of server/generative/tokenizer.py: the same token text as tailmark's server) and every timing key
  resolved into config.pbtxt's ``parameters``.
- ``write_tiny_lm``: a trained lm export (``backend "tiny_lm"``, training/workloads/lm/export.py) as
  ``<name>/1/model.py`` (tiny_lm_model.py) with ``tiny_lm.py`` (a copy of models/tiny_lm.py) and the same
  ``model.pt``. It needs torch in Triton's venv (``launch.ensure_torch``).

Both take Triton's LLM inputs: ``text_input`` (BYTES), optional ``max_tokens`` (INT32), ``stream`` and
``ignore_eos`` (BOOL), ``seed`` (INT64), and the vLLM backend's ``return_num_input_tokens`` and
``return_num_output_tokens`` (BOOL); outputs ``text_output`` (BYTES), one response per token when streamed, and
when asked ``num_input_tokens`` and ``num_output_tokens`` (UINT32: the prompt's tokens, this response's tokens).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

from google.protobuf import text_format

from tailmark.protos import model_config_pb2 as mc

HERE = Path(__file__).parent
SYNTHETIC_MODEL = HERE / "llm_model.py"
TINY_LM_MODEL = HERE / "tiny_lm_model.py"
SYNTHETIC_BACKEND = "synthetic_llm"
TINY_LM_BACKEND = "tiny_lm"
COUNTS = ("num_input_tokens", "num_output_tokens")


def _module_file(name: str) -> Path:
    """A tailmark module's source file, found without importing it (tiny_lm imports torch)."""
    return Path(importlib.util.find_spec(name).origin)


class GenerativeExportError(ValueError):
    """The source config is not the generative model asked for."""


def _io(config: mc.ModelConfig, *, ignore_eos: bool, seed: bool) -> None:
    """Triton's LLM convention (the inputs vLLM's and TensorRT-LLM's Triton backends share)."""
    del config.input[:]
    del config.output[:]
    config.input.add(name="text_input", data_type=mc.TYPE_STRING, dims=[1])
    config.input.add(name="max_tokens", data_type=mc.TYPE_INT32, dims=[1], optional=True)
    config.input.add(name="stream", data_type=mc.TYPE_BOOL, dims=[1], optional=True)
    if ignore_eos:
        config.input.add(name="ignore_eos", data_type=mc.TYPE_BOOL, dims=[1], optional=True)
    if seed:
        config.input.add(name="seed", data_type=mc.TYPE_INT64, dims=[1], optional=True)
    for name in COUNTS:  # the vLLM backend's: each response then says how many tokens it served
        config.input.add(name=f"return_{name}", data_type=mc.TYPE_BOOL, dims=[1], optional=True)
    config.output.add(name="text_output", data_type=mc.TYPE_STRING, dims=[-1])
    for name in COUNTS:
        config.output.add(name=name, data_type=mc.TYPE_UINT32, dims=[-1])


def _python_decoupled(config: mc.ModelConfig, name: str) -> None:
    config.name = name
    config.backend = "python"
    config.ClearField("platform")
    config.max_batch_size = 0
    config.ClearField("dynamic_batching")
    config.model_transaction_policy.decoupled = True
    del config.instance_group[:]
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)  # one scheduler: one batch


def _write(model_dir: Path, config: mc.ModelConfig, files: dict[str, Path]) -> Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
    for target, source in files.items():
        shutil.copyfile(source, model_dir / "1" / target)
    return model_dir


def synthetic_llm_config(config_text: str, name: str) -> mc.ModelConfig:
    """The Triton config of a synthetic LLM given as tailmark's config.pbtxt text; every setting explicit."""
    from tailmark.server.generative.settings import GenerativeSettings

    source = text_format.Parse(config_text, mc.ModelConfig())
    source.name = name
    if source.backend != SYNTHETIC_BACKEND:
        raise GenerativeExportError(f"{name}: backend {source.backend!r}, not {SYNTHETIC_BACKEND!r}")
    settings = GenerativeSettings.from_config(source)  # ConfigError on a bad value, before anything is written
    config = mc.ModelConfig()
    config.CopyFrom(source)
    _python_decoupled(config, name)
    _io(config, ignore_eos=True, seed=True)
    for key, value in dataclasses.asdict(settings).items():
        config.parameters[key].string_value = str(value)
    return config


def write_synthetic_llm(root: Path, name: str = "synth-llm", config_text: str | None = None) -> Path:
    """``<root>/<name>``: the synthetic LLM of ``config_text`` (default: the default repository's synth-llm)."""
    if config_text is None:
        from tailmark.server.default_repository import SYNTHETIC_CONFIGS

        config_text = SYNTHETIC_CONFIGS["synth-llm"]
    tokenizer = _module_file("tailmark.server.generative.tokenizer")
    files = {"model.py": SYNTHETIC_MODEL, "synthetic_tokenizer.py": tokenizer}
    return _write(root / name, synthetic_llm_config(config_text, name), files)


def write_tiny_lm(root: Path, exported: Path, name: str | None = None) -> Path:
    """``<root>/<name>`` (default: the export's folder name) from an lm export folder (its config.pbtxt and
    1/model.pt); the architecture parameters are kept as they are."""
    config_file = exported / "config.pbtxt"
    try:
        config = text_format.Parse(config_file.read_text(encoding="utf-8"), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise GenerativeExportError(f"{config_file}: {exc}") from None
    if config.backend != TINY_LM_BACKEND:
        raise GenerativeExportError(f"{config_file}: backend {config.backend!r}, not {TINY_LM_BACKEND!r}")
    weights = exported / "1" / "model.pt"
    if not weights.is_file():
        raise GenerativeExportError(f"{weights}: missing")
    name = name or exported.name
    _python_decoupled(config, name)
    _io(config, ignore_eos=False, seed=False)  # greedy: no sampling seed, and it stops only at max_tokens
    files = {"model.py": TINY_LM_MODEL, "tiny_lm.py": _module_file("tailmark.models.tiny_lm"), "model.pt": weights}
    return _write(root / name, config, files)
