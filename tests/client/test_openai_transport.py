"""The OpenAI transport against a real HTTP server on 127.0.0.1 with known timings and chosen faults."""

from __future__ import annotations

import asyncio
import json

import pytest

from support.sse_server import Behaviour, SseServer
from tailmark.client.errors import ModelNotFound
from tailmark.client.generation import count_tokens
from tailmark.client.openai_transport import OpenAITransport
from tailmark.client.prompts import PromptPool
from tailmark.client.transport import ModelInfo, RequestFailed

MODEL = ModelInfo("synth-test", "", "openai", (), (), 0)


def body(stream: bool = True, max_tokens: int = 5, api: str = "completions", **extra) -> bytes:
    pool = PromptPool(MODEL, api=api, count=4, input_tokens=20, output_tokens=max_tokens, seed=1, stream=stream)
    return json.dumps({**pool.body("a prompt of some words"), **extra}).encode()


async def generate(server: SseServer, payload: bytes, *, api: str = "completions", **kwargs):
    transport = await OpenAITransport.connect(server.url, api=api, **kwargs)
    try:
        return await transport.infer(payload), transport
    finally:
        await transport.aclose()


def test_streamed_completion_stamps_every_token_at_its_arrival():
    with SseServer(Behaviour(tokens=6, ttft_ms=30, gap_ms=15)) as server:
        generation, _ = asyncio.run(generate(server, body(max_tokens=6)))
        assert server.behaviour.last_body["stream_options"] == {"include_usage": True}
    assert "".join(generation.text) == " tok0 tok1 tok2 tok3 tok4 tok5"
    assert len(generation.chunk_ns) == 6
    gaps = [(b - a) / 1e6 for a, b in zip(generation.chunk_ns, generation.chunk_ns[1:], strict=False)]
    assert all(10 <= gap < 60 for gap in gaps), gaps  # 15 ms apart as written (a busy box adds, never removes)
    assert generation.output_tokens == 6 and generation.token_source == "usage"
    assert generation.input_tokens == 5 and generation.finish_reason == "length"


def test_chat_stream_and_non_streamed_answers():
    with SseServer(Behaviour(tokens=4, ttft_ms=5, gap_ms=2)) as server:
        chat, transport = asyncio.run(generate(server, body(api="chat", max_tokens=4), api="chat"))
        assert transport.path == "/v1/chat/completions"
        assert server.behaviour.last_body["messages"][0]["role"] == "user"
        whole, _ = asyncio.run(generate(server, body(stream=False, max_tokens=4)))
    assert "".join(chat.text) == " tok0 tok1 tok2 tok3" and len(chat.chunk_ns) == 4
    assert not whole.streamed and len(whole.chunk_ns) == 1 and whole.output_tokens == 4


def test_events_split_into_3_byte_writes_and_batched_in_one_write_read_the_same():
    with SseServer(Behaviour(tokens=5, ttft_ms=1, gap_ms=1, split_writes=True)) as server:
        split, _ = asyncio.run(generate(server, body()))
    with SseServer(Behaviour(tokens=5, ttft_ms=1, gap_ms=1, batch_events=True)) as server:
        batched, _ = asyncio.run(generate(server, body()))
    assert split.text == batched.text == [f" tok{i}" for i in range(5)]
    assert len(set(batched.chunk_ns)) <= 2  # one read carried them all: one arrival instant (or two reads)


def test_without_usage_the_tokens_are_counted_and_said_to_be():
    with SseServer(Behaviour(tokens=5, usage=False, ttft_ms=1, gap_ms=1)) as server:
        generation, _ = asyncio.run(generate(server, body()))
    assert generation.token_source == "counted"
    assert generation.output_tokens == count_tokens(" tok0 tok1 tok2 tok3 tok4") == 5
    assert generation.input_tokens is None and generation.input_tokens_served == count_tokens("a prompt of some words")


@pytest.mark.parametrize(
    ("behaviour", "status", "words"),
    [
        (Behaviour(cut_mid_event_after=2), "DATA_LOSS", "cut mid-event"),
        (Behaviour(close_after=2), "UNAVAILABLE", "before [DONE]"),
        (Behaviour(error_after=2), "INTERNAL", "the model fell over"),
        (Behaviour(skip_done=True), "DATA_LOSS", "without data: [DONE]"),
        (Behaviour(status=429), "RESOURCE_EXHAUSTED", "status 429"),
        (Behaviour(status=503), "UNAVAILABLE", "status 503"),
    ],
)
def test_broken_answers_are_failures_of_their_own_kind(behaviour, status, words):
    behaviour.ttft_ms, behaviour.gap_ms = 1, 1
    with SseServer(behaviour) as server, pytest.raises(RequestFailed) as failure:
        asyncio.run(generate(server, body()))
    assert failure.value.status == status and words in failure.value.message


def test_a_connection_closed_after_done_but_before_the_last_chunk_loses_nothing():
    with SseServer(Behaviour(tokens=4, ttft_ms=1, gap_ms=1, close_after_done=True)) as server:
        generation, _ = asyncio.run(generate(server, body(max_tokens=4)))
    assert generation.output_tokens == 4 and len(generation.chunk_ns) == 4


def test_a_deadline_mid_stream_is_deadline_exceeded():
    with SseServer(Behaviour(tokens=50, ttft_ms=1, gap_ms=20)) as server, pytest.raises(RequestFailed) as failure:
        asyncio.run(generate(server, body(max_tokens=50), timeout_s=0.1))
    assert failure.value.status == "DEADLINE_EXCEEDED"


def test_bearer_token_from_headers_and_model_discovery():
    async def scenario(server):
        bare = await OpenAITransport.connect(server.url)
        try:
            with pytest.raises(RequestFailed) as refused:
                await bare.infer(body())
        finally:
            await bare.aclose()
        authorised = await OpenAITransport.connect(server.url, metadata=[("authorization", "Bearer s3cret")])
        try:
            info = await authorised.model_info("synth-test")
            with pytest.raises(ModelNotFound, match="lists: synth-test"):
                await authorised.model_info("other")
            answer = await authorised.infer(body())
        finally:
            await authorised.aclose()
        return refused.value, info, answer

    with SseServer(Behaviour(token="s3cret", ttft_ms=1, gap_ms=1)) as server:
        refused, info, answer = asyncio.run(scenario(server))
    assert refused.status == "UNAUTHENTICATED"
    assert info.name == "synth-test" and info.platform == "openai"
    assert answer.output_tokens == 5


def test_keep_alive_reuses_one_connection_and_opens_more_for_concurrent_requests():
    async def scenario(server):
        transport = await OpenAITransport.connect(server.url, connections=1)
        try:
            for _ in range(5):
                await transport.infer(body())
            sequential = transport.connections_opened
            await asyncio.gather(*(transport.infer(body()) for _ in range(4)))
            return sequential, transport.connections_opened
        finally:
            await transport.aclose()

    with SseServer(Behaviour(ttft_ms=5, gap_ms=1)) as server:
        sequential, after = asyncio.run(scenario(server))
        assert server.behaviour.requests == 9
    assert sequential == 1 and after == 4  # never a request queued behind another in the client


def test_a_long_prompt_body_of_megabytes_goes_through():
    pool = PromptPool(MODEL, api="completions", count=1, input_tokens=400_000, output_tokens=3, seed=2)
    payload = pool.payload(0)
    assert len(payload) > 1_000_000
    with SseServer(Behaviour(tokens=3, ttft_ms=1, gap_ms=1)) as server:
        generation, _ = asyncio.run(generate(server, payload))
    assert generation.output_tokens == 3 and generation.input_tokens_served > 100_000
