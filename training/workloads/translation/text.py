"""Characters to token ids and back, and corpus BLEU by sacrebleu on the decoded strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tailmark.training.workloads.translation.dictd import ALPHABET

if TYPE_CHECKING:
    import torch

SPECIALS = 3  # PAD, BOS, EOS: tailmark.models.seq_transformer's ids 0, 1, 2
VOCAB_SIZE = SPECIALS + len(ALPHABET)
MAX_NGRAM_ORDER = 2  # BLEU-2: see corpus_bleu
_PAD_CHAR, _EOS_CHAR = "\0", "\2"  # stand-ins for PAD and EOS while encoding (never in ALPHABET)
_LOOKUP = np.zeros(max(map(ord, ALPHABET)) + 1, dtype=np.uint8)  # code point -> id; PAD (0) where not in ALPHABET
_LOOKUP[ord(_EOS_CHAR)] = 2
for _i, _char in enumerate(ALPHABET):
    _LOOKUP[ord(_char)] = SPECIALS + _i


def encode(phrases: Sequence[str], length: int, eos: bool) -> torch.Tensor:
    """(N, length) character ids, PAD-filled; with ``eos`` each phrase is followed by EOS (so length >= len + 1).

    Vectorised (one UTF-32 buffer through a lookup table): the training set is a few hundred thousand phrases and
    is encoded on the clock.
    """
    import torch

    end = _EOS_CHAR if eos else ""
    padded = "".join((phrase + end).ljust(length, _PAD_CHAR) for phrase in phrases)
    if len(padded) != length * len(phrases):
        raise ValueError(f"a phrase is longer than {length - len(end)} characters")
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).reshape(len(phrases), length)
    return torch.from_numpy(_LOOKUP[codes].astype(np.int64))


def decode(ids: torch.Tensor) -> list[str]:
    """One string per row: the characters up to the first EOS (specials dropped)."""
    from tailmark.models.seq_transformer import EOS

    phrases = []
    for row in ids.tolist():
        cut = row.index(EOS) if EOS in row else len(row)
        phrases.append("".join(ALPHABET[i - SPECIALS] for i in row[:cut] if i >= SPECIALS))
    return phrases


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) up to bigrams, one reference per segment; otherwise sacrebleu's defaults
    (13a tokenisation, case-sensitive, exp smoothing).

    Bigrams, not the usual four: the held-out phrases are one to three words, so a 4-gram (and mostly a 3-gram)
    precision has nothing to count, and corpus BLEU-4 would stay near zero whatever the model learned.
    """
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=MAX_NGRAM_ORDER).corpus_score(list(hypotheses), [list(references)]).score
