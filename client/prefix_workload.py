"""A shared-prefix workload: a controlled share of prompts start with one of K shared prefixes.

Servers with a prefix cache (vLLM's automatic prefix caching, SGLang's radix cache) answer a prompt whose
start they have seen faster; how much depends on how often prefixes repeat. ``PrefixSpec`` makes that share a
setting: of the pool's prompts, exactly ``round(reuse x pool size)`` begin with a shared prefix of
``tokens`` tokens (the rest of each prompt is its own text, so every prompt keeps its ``--input-tokens``), the
others share nothing. Which prompts, and which of the ``count`` prefixes each one gets (round robin, so every
prefix is used), follow from the seed alone: the same seed gives the same prompts.

The dispatcher draws prompts from the pool at random, so the share of *requests* that carried a prefix is
near ``reuse``, not exactly it; the token recorder counts it (``prefix_reuse`` in results.json).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailmark.client.errors import ConfigError

PREFIX_INDEX_BASE = 2**32  # prefix j's text is corpus run number BASE + j: apart from the prompts' own runs
ASSIGN_STREAM = 0x5EED_F1  # the assignment's own random stream, apart from the prompts' start positions


@dataclass(frozen=True, slots=True)
class PrefixSpec:
    tokens: int  # --shared-prefix-tokens
    count: int = 1  # --prefix-count: K distinct shared prefixes
    reuse: float = 1.0  # --prefix-reuse: share of prompts that start with one

    def check(self, input_tokens: int) -> None:
        if self.tokens < 1:
            raise ConfigError(f"--shared-prefix-tokens {self.tokens}: must be >= 1")
        if self.count < 1:
            raise ConfigError(f"--prefix-count {self.count}: must be >= 1")
        if not 0 <= self.reuse <= 1:
            raise ConfigError(f"--prefix-reuse {self.reuse:g}: must be between 0 and 1")
        if self.tokens >= input_tokens:
            raise ConfigError(
                f"--shared-prefix-tokens {self.tokens}: must be under --input-tokens {input_tokens} "
                "(each prompt keeps some text of its own)"
            )

    def assign(self, prompts: int, seed: int) -> list[int]:
        """For each prompt of the pool, the index of its shared prefix, or -1 for none."""
        chosen = round(self.reuse * prompts)
        order = np.random.default_rng([seed & (2**63 - 1), ASSIGN_STREAM]).permutation(prompts)
        out = [-1] * prompts
        for rank, index in enumerate(order[:chosen]):
            out[int(index)] = rank % self.count
        return out

    def to_dict(self, prompts: int, seed: int) -> dict:
        assigned = self.assign(prompts, seed)
        return {
            "shared_prefix_tokens": self.tokens,
            "prefixes": self.count,
            "reuse": self.reuse,
            "prompts_with_prefix": sum(1 for j in assigned if j >= 0),
        }


def prefixed_prompt(prompt_text, spec: PrefixSpec, prefix: int, index: int, input_tokens: int, seed: int) -> str:
    """Prompt ``index`` of ``input_tokens`` tokens: shared prefix ``prefix`` (-1: none) and then its own text.
    ``prompt_text`` is prompts.prompt_text (passed in: that module imports this one)."""
    if prefix < 0 or input_tokens <= spec.tokens:
        return prompt_text(index, input_tokens, seed)
    head = prompt_text(PREFIX_INDEX_BASE + prefix, spec.tokens, seed)
    return head + " " + prompt_text(index, input_tokens - spec.tokens, seed)
