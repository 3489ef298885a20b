"""The synthetic LLM's tokenizer and its deterministic text.

Counting (``count_tokens``): a token is a run of up to four word characters (letters, digits, underscore; any
script), or one other non-space character; whitespace separates and is not counted. "Hello, world!" is
"Hell" "o" "," "worl" "d" "!": 6 tokens. It is close to the "about four characters a token" of real BPE
vocabularies on English, costs one regex pass, and anyone can recount it.

Text (``token_texts``): each generated token is a space and one three-letter syllable of ``VOCABULARY``
(" tam", " rok", ...), so ``count_tokens`` of a whole completion gives back its ``completion_tokens``, and
so does splitting it on whitespace.
"""

from __future__ import annotations

import hashlib
import itertools
import re

import numpy as np

_TOKEN = re.compile(r"\w{1,4}|[^\w\s]")
VOCABULARY = tuple(
    " " + "".join(letters) for letters in itertools.product("bdfgklmnprstvz", "aeiou", "bdfgklmnprstvz")
)  # 980 syllables


def count_tokens(text: str) -> int:
    # subn counts in C: ~8x faster than iterating the matches (~0.15 µs a token against ~1.2 on a busy 2-core VM),
    # and the count is parsed on the event loop before the request's first step
    return _TOKEN.subn("", text)[1]


def text_seed(model_seed: int, request_seed: int | None, prompt: str) -> np.random.Generator:
    """The generator of one request's text and length: from its ``seed`` when it gives one, else from its
    prompt, so the same request always gets the same answer, streamed or not."""
    if request_seed is not None:
        return np.random.default_rng([model_seed, 1, request_seed & (2**64 - 1)])
    digest = hashlib.blake2b(prompt.encode(errors="surrogatepass"), digest_size=8).digest()
    return np.random.default_rng([model_seed, 0, int.from_bytes(digest, "little")])


def token_texts(rng: np.random.Generator, count: int) -> list[str]:
    return [VOCABULARY[i] for i in rng.integers(0, len(VOCABULARY), size=count)]
