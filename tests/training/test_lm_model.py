"""The lm model's byte tokenizer and decoding: text round-trips exactly, and incremental (KV-cache) decoding gives
the same tokens as the full-recompute reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tailmark.models.tiny_lm import VOCAB_SIZE, TinyLM, decode, encode
from tailmark.training.workloads.lm.corpus import corpus_dir, manifest


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_any_text_round_trips_through_the_byte_tokenizer(text):
    tokens = encode(text)
    assert all(0 <= t < VOCAB_SIZE for t in tokens) and len(tokens) == len(text.encode("utf-8"))
    assert decode(tokens) == text


def test_every_corpus_module_round_trips_and_tokens_are_its_bytes():
    folder = corpus_dir()
    for name in manifest():
        raw = (folder / name).read_bytes()
        text = raw.decode("utf-8")
        assert encode(text) == list(raw) and decode(list(raw)) == text


def test_a_cut_multibyte_character_decodes_to_a_replacement_not_an_error():
    assert decode(encode("é")[:1]) == "\ufffd" and decode([]) == ""


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyLM(d_model=32, nhead=4, layers=2, ff=64, context=32).eval()


def test_cached_steps_give_the_full_forward_logits(model):
    tokens = torch.randint(0, VOCAB_SIZE, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
    cache: list = []
    steps = [model.cached_step(tokens[:, i], i, cache) for i in range(32)]
    assert torch.allclose(torch.stack(steps, dim=1), full, atol=1e-5)
    assert len(cache) == 2 and cache[0][0].shape == (3, 4, 32, 8)


def test_cached_greedy_decode_equals_the_reference_up_to_the_context(model):
    prompt = encode("import os\n")
    assert model.greedy_decode_cached(prompt, 12) == model.greedy_decode(prompt, 12)
    # the cache stops at the context's end: 32 positions, so 32 - 10 + 1 tokens at most
    assert len(model.greedy_decode_cached(prompt, 100)) == 23
    assert model.greedy_decode_cached(prompt, 100) == model.greedy_decode(prompt, 23)
    assert len(model.greedy_decode(prompt, 40)) == 40  # the reference slides its window on


def test_bad_prompts_are_refused(model):
    with pytest.raises(ValueError, match="empty prompt"):
        model.greedy_decode([], 3)
    with pytest.raises(ValueError, match="context is 32"):
        model.greedy_decode_cached([1] * 33, 3)
    with pytest.raises(ValueError, match="context is 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_a_batched_cached_block_gives_each_row_its_own_forward_logits(model):
    """Three sequences of different lengths in slots 2, 0 and 3 of a four-slot cache: a padded prefill, then
    decode steps at per-row positions, each row's logits those of its own full forward pass."""
    generator = torch.Generator().manual_seed(2)
    lengths, rows = [5, 12, 9], torch.tensor([2, 0, 3])
    sequences = [torch.randint(0, VOCAB_SIZE, (n + 4,), generator=generator) for n in lengths]
    cache = model.new_cache(4)
    assert cache.slots == 4 and cache.keys[0].shape == (4, 4, 32, 8)
    padded = torch.zeros(3, max(lengths), dtype=torch.long)
    for b, (seq, n) in enumerate(zip(sequences, lengths, strict=True)):
        padded[b, :n] = seq[:n]
    logits = model.cached_block(padded, rows, torch.zeros(3, dtype=torch.long), cache)
    with torch.no_grad():
        for b, (seq, n) in enumerate(zip(sequences, lengths, strict=True)):
            assert torch.allclose(logits[b, :n], model(seq[None, :n])[0], atol=1e-5)
    for step in range(4):  # one new token per row, each at its own position
        tokens = torch.stack([seq[n + step] for seq, n in zip(sequences, lengths, strict=True)])[:, None]
        starts = torch.tensor(lengths) + step
        logits = model.cached_block(tokens, rows, starts, cache)
        with torch.no_grad():
            for b, (seq, n) in enumerate(zip(sequences, lengths, strict=True)):
                assert torch.allclose(logits[b, 0], model(seq[None, : n + step + 1])[0, -1], atol=1e-5)
    with pytest.raises(ValueError, match="past the model's context 32"):
        model.cached_block(torch.zeros(1, 2, dtype=torch.long), torch.tensor([1]), torch.tensor([31]), cache)
