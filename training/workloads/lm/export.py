"""A trained lm model in a model repository, and the in-process greedy completion a server will call.

    <repository>/<benchmark>/config.pbtxt    backend "tiny_lm", decoupled; the architecture in ``parameters``
    <repository>/<benchmark>/1/model.pt      the state_dict (torch.load(..., weights_only=True))

The layout is Triton's, with the inputs and outputs of Triton's generative backends (``text_input`` in,
``text_output`` streamed out, ``max_tokens``). The weights stay a state_dict rather than TorchScript so a server can
run ``TinyLM.cached_step`` (incremental decoding) on them; ``tailmark serve`` does not run this backend yet.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from google.protobuf import text_format

from tailmark.models.tiny_lm import TinyLM, decode, encode
from tailmark.protos import model_config_pb2 as mc
from tailmark.training.serve import ExportError

if TYPE_CHECKING:
    from tailmark.training.workloads.lm import LmWorkload

BACKEND = "tiny_lm"
ARCHITECTURE = ("d_model", "nhead", "layers", "ff", "context")


def export_lm(workload: LmWorkload, weights: Path, repository: Path, *, name: str | None = None) -> Path:
    """Write ``weights`` (a state_dict of ``workload``'s model) into ``repository``; returns the model folder."""
    model = workload.model()
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ExportError(f"{weights}: not the {workload.spec.benchmark} model ({str(exc).splitlines()[0]})") from None
    size = workload.size
    architecture = {
        "d_model": size.d_model,
        "nhead": size.nhead,
        "layers": size.layers,
        "ff": 4 * size.d_model,
        "context": size.context,
    }
    model_dir = repository / (name or workload.spec.benchmark)
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    tmp = model_dir / "1" / "model.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(model_dir / "1" / "model.pt")
    (model_dir / "config.pbtxt").write_text(config_text(model_dir.name, architecture), encoding="utf-8")
    return model_dir


def config_text(name: str, architecture: dict[str, int]) -> str:
    config = mc.ModelConfig(name=name, backend=BACKEND, max_batch_size=0)
    config.model_transaction_policy.decoupled = True
    config.input.add(name="text_input", data_type=mc.TYPE_STRING, dims=[1])
    config.input.add(name="max_tokens", data_type=mc.TYPE_INT32, dims=[1], optional=True)
    config.output.add(name="text_output", data_type=mc.TYPE_STRING, dims=[-1])
    for key, value in {**architecture, "tokenizer": "bytes"}.items():
        config.parameters[key].string_value = str(value)
    return text_format.MessageToString(config)


def load_exported(model_dir: Path) -> TinyLM:
    """The model an lm export holds, in eval mode on the CPU; ``ExportError`` with one line otherwise."""
    config_file = model_dir / "config.pbtxt"
    try:
        config = text_format.Parse(config_file.read_text(encoding="utf-8"), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ExportError(f"{config_file}: {exc}") from None
    if config.backend != BACKEND:
        raise ExportError(f"{config_file}: backend {config.backend!r}, not {BACKEND!r}")
    try:
        sizes = {key: int(config.parameters[key].string_value) for key in ARCHITECTURE}
    except ValueError:
        raise ExportError(f"{config_file}: parameters {', '.join(ARCHITECTURE)} must be integers") from None
    model = TinyLM(**sizes)
    try:
        model.load_state_dict(torch.load(model_dir / "1" / "model.pt", map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ExportError(f"{model_dir}/1/model.pt: {str(exc).splitlines()[0]}") from None
    return model.eval()


def complete(model: TinyLM, prompt: str, max_tokens: int, *, cached: bool = True) -> str:
    """Greedy completion of ``prompt``: the text of up to ``max_tokens`` new byte tokens (fewer with the cache
    when the context fills). The reference a server's stream must equal, token for token."""
    tokens = encode(prompt)[-model.context :]
    decoder = model.greedy_decode_cached if cached else model.greedy_decode
    return decode(decoder(tokens, max_tokens))
