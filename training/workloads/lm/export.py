"""A trained lm model in a model repository, and the in-process greedy completion a server will call.

    <repository>/<benchmark>/config.pbtxt    backend "tiny_lm", decoupled; the architecture in ``parameters``
    <repository>/<benchmark>/1/model.pt      the state_dict (torch.load(..., weights_only=True))

The layout is Triton's, with the inputs and outputs of Triton's generative backends (``text_input`` in,
``text_output`` streamed out, ``max_tokens``). The weights stay a state_dict rather than TorchScript so a server can
run incremental decoding on them: ``tailmark serve`` runs this backend (server/generative/lm_backend.py).

The export also records what the weights score on the workload's held-out windows (``eval_windows`` of them,
``held_out_next_byte_acc``: the harness's evaluation, recomputed), so ``tailmark accuracy --lm`` can check the
served model against the trained figure over the wire. Without the corpus installed the figure is left out.
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
    return write_export(model.eval(), repository / (name or workload.spec.benchmark), architecture, size.eval_windows)


def write_export(model: TinyLM, model_dir: Path, architecture: dict[str, int], eval_windows: int = 0) -> Path:
    """``model``'s state_dict and config into ``model_dir``; with ``eval_windows``, its held-out figure too."""
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    tmp = model_dir / "1" / "model.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(model_dir / "1" / "model.pt")
    extra: dict[str, str] = {}
    accuracy = held_out_accuracy(model, eval_windows) if eval_windows else None
    if accuracy is not None:
        extra = {"eval_windows": str(eval_windows), "held_out_next_byte_acc": repr(accuracy)}
    (model_dir / "config.pbtxt").write_text(config_text(model_dir.name, architecture, extra), encoding="utf-8")
    return model_dir


def held_out_accuracy(model: TinyLM, eval_windows: int) -> float | None:
    """Next-byte accuracy on ``eval_windows`` held-out windows of the model's context + 1 bytes, as the harness
    evaluates it (training/workloads/lm); None when the corpus is not installed."""
    from tailmark.training.workload import DataMissing
    from tailmark.training.workloads.lm import eval_starts, windows_at
    from tailmark.training.workloads.lm.corpus import corpus_dir, read_corpus

    try:
        held = read_corpus(corpus_dir()).held_out
    except DataMissing:
        return None
    stream = torch.frombuffer(bytearray(held), dtype=torch.uint8).long()
    windows = windows_at(stream, eval_starts(len(stream), model.context, eval_windows), model.context + 1)
    device = model.out.weight.device
    hits = 0
    with torch.no_grad():
        for chunk in windows.to(device).split(64):
            hits += int((model(chunk[:, :-1]).argmax(dim=-1) == chunk[:, 1:]).sum())
    return hits / (eval_windows * model.context)


def config_text(name: str, architecture: dict[str, int], extra: dict[str, str] | None = None) -> str:
    config = mc.ModelConfig(name=name, backend=BACKEND, max_batch_size=0)
    config.model_transaction_policy.decoupled = True
    config.input.add(name="text_input", data_type=mc.TYPE_STRING, dims=[1])
    config.input.add(name="max_tokens", data_type=mc.TYPE_INT32, dims=[1], optional=True)
    config.input.add(name="stream", data_type=mc.TYPE_BOOL, dims=[1], optional=True)
    for count in ("num_input_tokens", "num_output_tokens"):  # the vLLM backend's: a client then counts bytes served
        config.input.add(name=f"return_{count}", data_type=mc.TYPE_BOOL, dims=[1], optional=True)
    config.output.add(name="text_output", data_type=mc.TYPE_STRING, dims=[-1])
    for count in ("num_input_tokens", "num_output_tokens"):
        config.output.add(name=count, data_type=mc.TYPE_UINT32, dims=[-1])
    for key, value in {**architecture, "tokenizer": "bytes", **(extra or {})}.items():
        config.parameters[key].string_value = str(value)
    return text_format.MessageToString(config)


def load_exported(model_dir: Path, version_dir: Path | None = None) -> TinyLM:
    """The model an lm export holds (version 1, or ``version_dir``), in eval mode on the CPU; ``ExportError``
    with one line otherwise."""
    config_file = model_dir / "config.pbtxt"
    try:
        config = text_format.Parse(config_file.read_text(encoding="utf-8"), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ExportError(f"{config_file}: {exc}") from None
    return build_model(config, config_file, version_dir or model_dir / "1")


def build_model(config: mc.ModelConfig, config_file: Path, version_dir: Path) -> TinyLM:
    """The TinyLM ``config``'s parameters describe, with ``version_dir/model.pt`` loaded, in eval mode."""
    if config.backend != BACKEND:
        raise ExportError(f"{config_file}: backend {config.backend!r}, not {BACKEND!r}")
    try:
        sizes = {key: int(config.parameters[key].string_value) for key in ARCHITECTURE}
    except ValueError:
        raise ExportError(f"{config_file}: parameters {', '.join(ARCHITECTURE)} must be integers") from None
    model = TinyLM(**sizes)
    try:
        model.load_state_dict(torch.load(version_dir / "model.pt", map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ExportError(f"{version_dir}/model.pt: {str(exc).splitlines()[0]}") from None
    return model.eval()


def complete(model: TinyLM, prompt: str, max_tokens: int, *, cached: bool = True) -> str:
    """Greedy completion of ``prompt``: the text of up to ``max_tokens`` new byte tokens (fewer with the cache
    when the context fills). The reference a server's stream must equal, token for token."""
    tokens = encode(prompt)[-model.context :]
    decoder = model.greedy_decode_cached if cached else model.greedy_decode
    return decode(decoder(tokens, max_tokens))
