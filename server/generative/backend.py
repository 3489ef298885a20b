"""The repository's face of a synthetic LLM (``backend: "synthetic_llm"``): it holds the model's settings
and its scheduler, and answers on the generative frontends (server/generative/model.py). Its text is drawn
from the request's seed, or its prompt, so the same request always gets the same answer."""

from __future__ import annotations

import json

from tailmark.protos import model_config_pb2 as mc
from tailmark.server.generative.engine import Engine
from tailmark.server.generative.model import GenerativeModel, Sequence
from tailmark.server.generative.settings import GenerativeSettings
from tailmark.server.generative.tokenizer import count_tokens, text_seed, token_texts
from tailmark.server.stats import ModelStats


class GenerativeBackend(GenerativeModel):
    def __init__(self, config: mc.ModelConfig) -> None:
        self.name = config.name
        self.settings = GenerativeSettings.from_config(config)
        self.max_model_len = self.settings.max_model_len
        self.default_max_tokens = self.settings.default_max_tokens
        token_texts(text_seed(self.settings.seed, 0, ""), 1)  # numpy's first seeding costs ~50 ms: not in a request
        self.engine: Engine | None = None  # made on the first request: it needs the loaded model's statistics

    def bind(self, stats: ModelStats) -> Engine:
        if self.engine is None:
            self.engine = Engine(self.settings, stats)
        return self.engine

    def count_prompt(self, prompt: str | list[int]) -> int:
        return len(prompt) if isinstance(prompt, list) else count_tokens(prompt)

    def start(
        self, stats: ModelStats, prompt: str | list[int], max_tokens: int, *, ignore_eos: bool = False,
        seed: int | None = None,
    ) -> Sequence:  # fmt: skip
        engine = self.bind(stats)
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)  # token ids seed by their JSON
        rng = text_seed(self.settings.seed, seed, text)
        length = engine.output_length(rng, max_tokens, ignore_eos)
        return engine.submit(self.count_prompt(prompt), token_texts(rng, length), max_tokens)
