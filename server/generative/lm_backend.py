"""The trained byte-level language model on the generative frontends (``backend: "tiny_lm"``, as
``tailmark train lm --export-to REPO`` writes it: training/workloads/lm/export.py).

The architecture comes from the config's ``parameters``, the weights from ``<version>/model.pt``; the engine
(lm_engine.py) decodes greedily with a KV cache and continuous batching. Serving parameters, all optional:

    device               auto (CUDA when torch sees a GPU, else CPU) | cpu | cuda | cuda:N
    max_num_seqs         sequences decoded together (KV-cache slots); later arrivals wait (default 16)
    continuous_batching  true: sequences join and leave the running batch between steps; false: one sequence at
                         a time, each to its end (the baseline of bench/lm_serving.py)
    default_max_tokens   when the request gives no max_tokens (default 16; never past the context)
    intra_op_threads     torch's threads, process-wide as for the torch backend (default 1: this model's
                         operations are too small to share, and on a busy host two threads made a step 30x slower)

Tokens are bytes (vocabulary 256). ``max_model_len`` is the model's context + 1: a prompt of up to ``context``
bytes, and a completion as long as fits after it, where the completion's last token is never fed back (its
successor is not asked for), so it needs no cache position; ``complete()`` gives the same count.

There is no end-of-sequence token: the corpus (Python sources) holds no NUL or other end marker, so the model
never learnt to stop, and every sequence runs to ``max_tokens`` (finish_reason "length");
``ignore_eos`` changes nothing. Decoding is greedy (argmax), so ``seed`` changes nothing either, and a served
completion equals ``complete()``, the in-process reference, token for token. Each token's text is its byte
through an incremental UTF-8 decoder: a byte that starts a multi-byte character streams as "" and the character
comes with its last byte, so the streamed texts join to exactly ``decode`` of the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tailmark.protos import model_config_pb2 as mc
from tailmark.server import errors
from tailmark.server.config import ConfigError, parameter
from tailmark.server.generative.model import GenerativeModel, Sequence
from tailmark.server.stats import ModelStats

if TYPE_CHECKING:
    from tailmark.server.generative.lm_engine import LmEngine

VOCAB_SIZE = 256


@dataclass(frozen=True, slots=True)
class LmSettings:
    device: str = "auto"
    max_num_seqs: int = 16
    continuous_batching: bool = True
    default_max_tokens: int = 16
    intra_op_threads: int = 1

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> LmSettings:
        source = f"model {config.name!r}"
        defaults = cls()
        values: dict = {"device": parameter(config, "device", defaults.device)}
        for name in ("max_num_seqs", "default_max_tokens", "intra_op_threads"):
            text = parameter(config, name, str(getattr(defaults, name)))
            if not text.isdigit() or int(text) < 1:
                raise ConfigError(f"{source}: parameter {name}={text!r} must be a whole number >= 1")
            values[name] = int(text)
        text = parameter(config, "continuous_batching", "true").lower()
        if text not in ("true", "false"):
            raise ConfigError(f"{source}: parameter continuous_batching={text!r} must be true or false")
        values["continuous_batching"] = text == "true"
        return cls(**values)


def pick_device(name: str, source: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{source}: parameter device={name!r}: auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{source}: parameter device={name!r}, but torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{source}: parameter device={name!r}: auto, cpu, cuda or cuda:N")
    return device


class TinyLmBackend(GenerativeModel):
    def __init__(self, config: mc.ModelConfig, model_dir: Path, version_dir: Path) -> None:
        try:
            import torch
        except ImportError as exc:  # the client-only install: the model is UNAVAILABLE, saying why
            raise ConfigError(f"the tiny_lm backend needs torch ({exc}): pip install 'tailmark[torch]'") from None
        from tailmark.training.serve import ExportError
        from tailmark.training.workloads.lm.export import build_model

        self.name = config.name
        self.settings = LmSettings.from_config(config)
        try:
            model = build_model(config, model_dir / "config.pbtxt", version_dir)
        except ExportError as exc:
            raise ConfigError(str(exc)) from None
        self.device = pick_device(self.settings.device, f"model {config.name!r}")
        torch.set_num_threads(self.settings.intra_op_threads)
        self.model = model.to(self.device)
        self.max_model_len = model.context + 1  # see the module's docstring
        self.default_max_tokens = min(self.settings.default_max_tokens, model.context)
        self.engine: LmEngine | None = None  # made on the first request: it records into the model's statistics
        self._warm_up()

    def _warm_up(self) -> None:
        """One step on a scratch cache, so the first request does not pay for torch's first calls."""
        import torch

        cache = self.model.new_cache(1)
        zeros = torch.zeros(1, dtype=torch.long, device=self.device)
        self.model.cached_block(torch.zeros(1, 2, dtype=torch.long, device=self.device), zeros, zeros, cache)

    def bind(self, stats: ModelStats) -> LmEngine:
        from tailmark.server.generative.lm_engine import LmEngine

        if self.engine is None:
            s = self.settings
            self.engine = LmEngine(self.model, stats, max_num_seqs=s.max_num_seqs, continuous=s.continuous_batching)
        return self.engine

    def count_prompt(self, prompt: str | list[int]) -> int:
        return len(prompt) if isinstance(prompt, list) else len(prompt.encode("utf-8"))

    def start(
        self, stats: ModelStats, prompt: str | list[int], max_tokens: int, *, ignore_eos: bool = False,
        seed: int | None = None,
    ) -> Sequence:  # fmt: skip
        """Refuses (InvalidInput, one line) what the model cannot run: an empty prompt, a token id that is not a
        byte, a prompt and completion past the context."""
        tokens = list(prompt.encode("utf-8")) if isinstance(prompt, str) else list(prompt)
        if not tokens:
            raise errors.InvalidInput(f"model {self.name!r}: an empty prompt; give at least one byte")
        if any(not 0 <= t < VOCAB_SIZE for t in tokens):
            raise errors.InvalidInput(f"model {self.name!r}: token ids are bytes, 0..255")
        if max_tokens < 1 or len(tokens) + max_tokens > self.max_model_len:
            raise errors.InvalidInput(
                f"model {self.name!r}: {len(tokens)} prompt tokens + max_tokens {max_tokens} do not fit the "
                f"model's {self.max_model_len} tokens (its context + 1)"
            )
        return self.bind(stats).submit(tokens, max_tokens)
