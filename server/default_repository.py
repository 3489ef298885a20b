"""The repository ``tailmark serve`` uses when none is given, built on first use into a cache folder.

It holds the synthetic models (identity, null, sleep), the synthetic LLM ``synth-llm`` (served on the
OpenAI-compatible routes of ``--http-port``; docs/generative.md), the reference ResNet, exported to
TorchScript with seeded random weights, and ``tiny-lm``: the lm workload's byte-level Transformer at its
benchmark size, served by the real ``tiny_lm`` backend (KV cache, continuous batching), with seeded random
weights. It is UNTRAINED, and says so in its config: its steps cost what the trained model's cost, so it is there
for timing (a generative scenario with real model compute, no download and no training at start-up); its text
is noise. For real completions train and export one (``tailmark train lm --export-to REPO``).

The folder is a plain Triton-layout repository, so it can be copied, edited and passed back with ``--model-repository``.

Without torch (the client-only install) the synthetic models are built and ``resnet`` keeps its config and
an empty version folder: the server lists it UNAVAILABLE, saying torch is needed. Whether torch is installed
is part of the cache folder's name, so installing torch later builds a fresh folder, with the ResNet.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from tailmark import __version__

SYNTHETIC_CONFIGS = {
    "identity": """
backend: "identity"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
""",
    "null": """
backend: "null"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
""",
    "sleep": """
backend: "sleep"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 4 } ]
parameters { key: "distribution" value: { string_value: "lognormal" } }
parameters { key: "mean_ms" value: { string_value: "5" } }
parameters { key: "sigma" value: { string_value: "0.5" } }
""",
    # the synthetic LLM of the OpenAI-compatible routes and of ModelStreamInfer in Triton's LLM convention
    # (docs/generative.md; the return_* inputs and extra outputs are Triton's vLLM backend's): a lone request's
    # first token after 20 ms + 0.05 ms per input token, every later one after 5 ms + 0.5 ms per sequence in flight
    "synth-llm": """
backend: "synthetic_llm"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "ignore_eos" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true },
  { name: "return_finish_reason" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_input_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_output_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true }
]
output [
  { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "finish_reason" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "num_input_tokens" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "num_output_tokens" data_type: TYPE_UINT32 dims: [ -1 ] }
]
parameters { key: "prefill_base_ms" value: { string_value: "20" } }
parameters { key: "prefill_per_input_token_ms" value: { string_value: "0.05" } }
parameters { key: "decode_base_ms" value: { string_value: "5" } }
parameters { key: "decode_per_sequence_ms" value: { string_value: "0.5" } }
parameters { key: "max_num_seqs" value: { string_value: "64" } }
parameters { key: "max_model_len" value: { string_value: "8192" } }
parameters { key: "default_max_tokens" value: { string_value: "64" } }
""",
}

RESNET_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 32, 32 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


# the lm workload's benchmark size (training/workloads/lm SIZES["full"]); the weights are seeded, not trained
TINY_LM = {"d_model": 96, "nhead": 4, "layers": 3, "ff": 384, "context": 64}
TINY_LM_SERVING = {
    "weights": "untrained: seeded random (seed 0), for timing; its text is noise",
    "max_num_seqs": "16",
    "default_max_tokens": "16",
}

TINY_LM_NO_TORCH = """
backend: "tiny_lm"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]
"""


def default_repository_path() -> Path:
    """Keyed by version, by the configs' content and by whether torch is installed, so an edited default, or
    one built before torch was installed, is rebuilt, never reused."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    content = "".join(SYNTHETIC_CONFIGS.values()) + RESNET_CONFIG + _resnet_source().read_text()
    content += repr((TINY_LM, TINY_LM_SERVING)) + _source("tailmark.models.tiny_lm").read_text()
    content += _source("tailmark.training.workloads.lm.export").read_text()  # writes tiny-lm's config
    digest = hashlib.sha256(content.encode()).hexdigest()[:10]
    variant = "" if _torch_installed() else "-no-torch"
    return cache / "tailmark" / f"default-repository-{__version__}-{digest}{variant}"


def _torch_installed() -> bool:
    """Whether torch can be found, without importing it (seconds; the server imports it only for the ResNet)."""
    return importlib.util.find_spec("torch") is not None


def _resnet_source():
    """models/resnet.py, located without importing torch (its source is part of the cache key)."""
    return _source("tailmark.models.resnet")


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def write_model(repository: Path, name: str, config_text: str) -> Path:
    """Write ``<repository>/<name>/config.pbtxt`` and an empty version folder 1."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(f'name: "{name}"\n' + config_text.lstrip())
    return model_dir


def build(repository: Path) -> Path:
    """Write the default repository into ``repository`` (which must not exist yet); without torch the
    ResNet's version folder stays empty, and the server says why it is UNAVAILABLE."""
    for name, text in SYNTHETIC_CONFIGS.items():
        write_model(repository, name, text)
    model_dir = write_model(repository, "resnet", RESNET_CONFIG)
    try:
        import torch
    except ImportError:
        write_model(repository, "tiny-lm", TINY_LM_NO_TORCH)  # UNAVAILABLE, saying torch is needed
        return repository
    from tailmark.models import export, resnet
    from tailmark.models.tiny_lm import TinyLM
    from tailmark.training.workloads.lm.export import write_export

    torch.manual_seed(0)
    lm_dir = write_export(TinyLM(**TINY_LM).eval(), repository / "tiny-lm", TINY_LM)
    config = (lm_dir / "config.pbtxt").read_text()
    serving = "".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in TINY_LM_SERVING.items()
    )
    (lm_dir / "config.pbtxt").write_text(config + serving)

    export.export_torchscript(resnet.build(seed=0), torch.zeros(1, *resnet.INPUT_SHAPE), model_dir / "1" / "model.pt")
    return repository


def _is_built(target: Path) -> bool:
    """The ResNet is written last: with torch its model file, without torch its (empty) version folder.
    (A torch that is found but fails to import leaves no model file: rebuilt each time, cheaply, until fixed.)"""
    version_dir = target / "resnet" / "1"
    return (version_dir / "model.pt").is_file() if _torch_installed() else version_dir.is_dir()


def ensure_default_repository() -> Path:
    """The default repository's path, building it atomically the first time."""
    target = default_repository_path()
    if _is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".default-repository-", dir=target.parent))
    try:
        build(staging / "repo")
        if target.exists():  # a half-built one from an interrupted run
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging / "repo", target)
        except OSError:  # another process finished first
            if not _is_built(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
