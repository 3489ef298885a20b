"""Prompts: exact input lengths by the client's tokenizer, deterministic by seed, request bodies per API."""

from __future__ import annotations

import json

import pytest

from tailmark.client.errors import ConfigError
from tailmark.client.generation import count_tokens
from tailmark.client.prompts import PromptPool, describe_corpus, prompt_text
from tailmark.client.transport import ModelInfo

MODEL = ModelInfo("m", "", "openai", (), (), 0)


def pool(**kw) -> PromptPool:
    settings = dict(api="completions", count=8, input_tokens=64, output_tokens=16, seed=5) | kw
    return PromptPool(MODEL, **settings)


@pytest.mark.parametrize("length", [1, 2, 17, 256, 4096])
def test_every_prompt_has_exactly_the_asked_tokens(length):
    for index in range(5):
        assert count_tokens(prompt_text(index, length, seed=11)) == length


def test_longer_than_the_corpus_wraps_and_stays_exact():
    tokens = describe_corpus()["tokens"]
    assert count_tokens(prompt_text(0, tokens + 1000, seed=1)) == tokens + 1000


def test_same_seed_same_prompts_other_seed_other_prompts():
    assert pool().payload(3) == pool().payload(3)
    assert pool().payload(3) != pool(seed=6).payload(3)
    assert pool().payload(3) != pool().payload(4)
    assert pool().payload(3 + 8) == pool().payload(3)  # the pool's prompts repeat past --pool-size


def test_completions_and_chat_bodies():
    completions = json.loads(pool(ignore_eos=True).payload(0))
    assert completions["max_tokens"] == 16 and completions["stream"] and completions["ignore_eos"]
    assert completions["stream_options"] == {"include_usage": True}
    assert count_tokens(completions["prompt"]) == 64
    chat = json.loads(pool(api="chat", stream=False).payload(0))
    assert chat["messages"][0]["role"] == "user" and count_tokens(chat["messages"][0]["content"]) == 64
    assert not chat["stream"] and "stream_options" not in chat and "ignore_eos" not in chat


def test_a_trace_payload_size_sets_the_input_length():
    body = json.loads(pool().payload(2, payload_size=300))
    assert count_tokens(body["prompt"]) == 300


def test_refusals():
    with pytest.raises(ConfigError, match="--output-tokens 0"):
        pool(output_tokens=0)
    with pytest.raises(ConfigError, match="--api"):
        pool(api="embeddings")
    with pytest.raises(ConfigError, match="one prompt"):
        pool().payload(0, batch_size=2)


def test_the_workload_is_described_for_the_results():
    described = pool().describe()
    assert described["input_tokens"] == 64 and len(described["corpus"]["sha256"]) == 64
    assert described["corpus"]["tokens"] > 50_000
