"""The repository's face of a synthetic LLM (``backend: "synthetic_llm"``): it holds the model's settings
and its scheduler, which the OpenAI routes use. Unary KServe inference is refused, as Triton refuses
ModelInfer for a decoupled model: a generative model answers with a stream of tokens."""

from __future__ import annotations

from tailmark.protos import model_config_pb2 as mc
from tailmark.server.backends.base import Tensors
from tailmark.server.generative.engine import Engine
from tailmark.server.generative.settings import GenerativeSettings
from tailmark.server.generative.tokenizer import text_seed, token_texts
from tailmark.server.stats import ModelStats


class GenerativeBackend:
    runs_inline = True

    def __init__(self, config: mc.ModelConfig) -> None:
        self.name = config.name
        self.settings = GenerativeSettings.from_config(config)
        token_texts(text_seed(self.settings.seed, 0, ""), 1)  # numpy's first seeding costs ~50 ms: not in a request
        self.engine: Engine | None = None  # made by bind(): it needs the loaded model's statistics

    def bind(self, stats: ModelStats) -> Engine:
        if self.engine is None:
            self.engine = Engine(self.settings, stats)
        return self.engine

    def execute(self, inputs: Tensors) -> Tensors:
        raise RuntimeError(
            f"{self.name} is a generative model: use POST /v1/completions or /v1/chat/completions on --http-port"
        )

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
