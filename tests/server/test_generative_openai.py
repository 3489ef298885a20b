"""``tailmark serve --http-port``: the OpenAI-compatible routes of the synthetic LLM, driven over real HTTP by
a minimal test-side client (tests/support/sse.py): the shape of the SSE stream and of whole answers, the same
text streamed or not, usage counts, OpenAI's error bodies, the bearer token and the request-size limit, and
the KServe routes beside them."""

from __future__ import annotations

import json

import pytest

from support.serve import ServerProcess
from support.sse import get, post
from tailmark.server.default_repository import SYNTHETIC_CONFIGS, write_model
from tailmark.server.generative.tokenizer import count_tokens

TOKEN = "sesame"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BODY = 1 << 20
FAST = """
parameters { key: "prefill_base_ms" value: { string_value: "2" } }
parameters { key: "decode_base_ms" value: { string_value: "1" } }
parameters { key: "decode_per_sequence_ms" value: { string_value: "0" } }
parameters { key: "max_model_len" value: { string_value: "200" } }
parameters { key: "output_length" value: { string_value: "uniform" } }
"""


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """A server with the default repository's synth-llm, a fast variant (``fast``: 2 ms to the first token,
    1 ms a token, 200-token context, uniform lengths without ignore_eos) and an identity model."""
    root = tmp_path_factory.mktemp("generative")
    write_model(root, "synth-llm", SYNTHETIC_CONFIGS["synth-llm"])
    fast = SYNTHETIC_CONFIGS["synth-llm"].split("parameters", 1)[0] + FAST
    write_model(root, "fast", fast)
    write_model(root, "identity", SYNTHETIC_CONFIGS["identity"])
    args = ("--http-port", "0", "--auth-token", TOKEN, "--max-message-bytes", str(MAX_BODY))
    with ServerProcess(root, *args) as process:
        yield int(process.rest_address.rsplit(":", 1)[1])


def _post(port, path, body, **kwargs):
    return post(port, path, body, headers=AUTH, **kwargs)


def test_models_lists_the_generative_models_only(port):
    status, listing = get(port, "/v1/models", AUTH)
    assert status == 200 and listing["object"] == "list"
    assert sorted(m["id"] for m in listing["data"]) == ["fast", "synth-llm"]
    assert all(m["object"] == "model" and m["owned_by"] == "tailmark" for m in listing["data"])
    status, card = get(port, "/v1/models/fast", AUTH)
    assert status == 200 and card["id"] == "fast" and card["max_model_len"] == 200
    status, error = get(port, "/v1/models/identity", AUTH)
    assert status == 404 and error["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_stream_shape_usage_and_same_text_as_the_whole_answer(port, route):
    path, prompt = ("/v1/completions", {"prompt": "Hello, world!"}) if route == "completions" else (
        "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello, world!"}]})  # fmt: skip
    body = {"model": "synth-llm", **prompt, "max_tokens": 7, "seed": 42}
    whole = _post(port, path, body)
    assert whole.status == 200 and whole.headers["content-type"] == "application/json"
    document = whole.json()
    [choice] = document["choices"]
    text = choice["text"] if route == "completions" else choice["message"]["content"]
    assert document["object"] == ("text_completion" if route == "completions" else "chat.completion")
    assert route == "completions" or choice["message"]["role"] == "assistant"
    # "Hello, world!" is 6 tokens; the chat prompt is counted as "user: Hello, world!" (8)
    prompt_tokens = 6 if route == "completions" else 8
    assert document["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 7,
        "total_tokens": prompt_tokens + 7,
    }
    assert choice["finish_reason"] == "length" and count_tokens(text) == 7 == len(text.split())

    streamed = _post(port, path, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.status == 200 and streamed.headers["content-type"] == "text/event-stream"
    assert streamed.headers["transfer-encoding"] == "chunked"
    chunks = streamed.chunks()
    *content, usage = chunks
    kind = "text_completion" if route == "completions" else "chat.completion.chunk"
    assert {c["object"] for c in chunks} == {kind} and len({c["id"] for c in chunks}) == 1
    assert all(c["model"] == "synth-llm" and c["usage"] is None for c in content)
    assert usage["choices"] == [] and usage["usage"] == document["usage"]
    if route == "chat":  # the role comes first, in an empty delta, as OpenAI and vLLM send it
        assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        content = content[1:]
        pieces = [c["choices"][0]["delta"]["content"] for c in content]
    else:
        pieces = [c["choices"][0]["text"] for c in content]
    assert len(pieces) == 7 and "".join(pieces) == text  # one event per token, the same text
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 6 + ["length"]
    assert len(streamed.token_times_ns()) == 7

    plain = _post(port, path, {**body, "stream": True})  # no usage asked for: no usage chunk, no usage field
    assert all("usage" not in c and c["choices"] for c in plain.chunks())
    options = {"include_usage": True, "continuous_usage_stats": True}  # vLLM's: the usage so far in every chunk
    running = _post(port, path, {**body, "stream": True, "stream_options": options}).chunks()
    counts = [c["usage"]["completion_tokens"] for c in running]
    assert counts == ([0] if route == "chat" else []) + list(range(1, 8)) + [7]


def test_the_seed_or_else_the_prompt_decides_the_text(port):
    def text(**fields):
        answer = _post(port, "/v1/completions", {"model": "synth-llm", "max_tokens": 12, **fields})
        return answer.json()["choices"][0]["text"]

    assert text(prompt="a", seed=1) == text(prompt="a", seed=1) == text(prompt="b", seed=1)
    assert text(prompt="a", seed=1) != text(prompt="a", seed=2)
    assert text(prompt="a") == text(prompt="a") != text(prompt="b")
    # token ids count one token each
    answer = _post(port, "/v1/completions", {"model": "synth-llm", "prompt": [5, 6, 7], "max_tokens": 1})
    assert answer.json()["usage"]["prompt_tokens"] == 3


def test_ignore_eos_gives_max_tokens_and_the_length_model_otherwise(port):
    lengths = set()
    for seed in range(20):
        body = {"model": "fast", "prompt": "x", "max_tokens": 10, "seed": seed}
        answer = _post(port, "/v1/completions", body).json()
        usage, [choice] = answer["usage"], answer["choices"]
        lengths.add(usage["completion_tokens"])
        assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 10 else "stop")
        assert _post(port, "/v1/completions", {**body, "ignore_eos": True}).json()["usage"]["completion_tokens"] == 10
    assert len(lengths) >= 4 and min(lengths) >= 1 and max(lengths) <= 10  # uniform on 1..10
    # no max_tokens: default_max_tokens (64), clipped to the context left (200 - 1)
    assert _post(port, "/v1/completions", {"model": "synth-llm", "prompt": "x", "ignore_eos": True}).json()[
        "usage"]["completion_tokens"] == 64  # fmt: skip
    answer = _post(port, "/v1/chat/completions", {"model": "fast", "messages": [{"role": "user", "content": "x"}],
                                                   "ignore_eos": True, "max_completion_tokens": 3})  # fmt: skip
    assert answer.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "does not exist"),
        ("/v1/completions", {"model": "identity", "prompt": "x"}, 404, "not a generative model"),
        ("/v1/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/completions", b"[" * 100_000, 400, "not valid JSON"),
        ("/v1/completions", b'{"model": "\xff"}', 400, "not valid JSON"),
        ("/v1/completions", {"model": "fast", "prompt": 3}, 400, "'prompt'"),
        ("/v1/completions", {"model": "fast", "prompt": ["a", "b"]}, 400, "one prompt per request"),
        ("/v1/completions", {"model": "fast", "prompt": "x", "max_tokens": 0}, 400, "at least 1"),
        ("/v1/completions", {"model": "fast", "prompt": "x", "max_tokens": "5"}, 400, "'max_tokens' must be"),
        ("/v1/completions", {"model": "fast", "prompt": "x", "max_tokens": 200}, 400, "maximum context length is 200"),
        ("/v1/completions", {"model": "fast", "prompt": "x", "n": 2}, 400, "n=1"),
        ("/v1/completions", {"model": "fast", "prompt": "x", "stream_options": {"include_usage": True}}, 400,
         "only allowed when 'stream' is true"),
        ("/v1/chat/completions", {"model": "fast", "messages": []}, 400, "'messages'"),
        ("/v1/chat/completions", {"model": "fast", "messages": [{"content": "x"}]}, 400, "'role'"),
        ("/v1/chat/completions", {"model": "fast", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         400, "only text content parts"),
        ("/v1/embeddings", {"model": "fast", "input": "x"}, 404, "Invalid URL (POST /v1/embeddings)"),
    ],
)  # fmt: skip
def test_errors_have_openai_bodies_and_the_connection_keeps_serving(port, path, body, status, says):
    answer = _post(port, path, body)
    assert answer.status == status, answer.body
    error = answer.json()["error"]
    assert says in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert _post(port, "/v1/completions", {"model": "fast", "prompt": "x", "max_tokens": 1}).status == 200


def test_bearer_token_and_size_limit_answer_openai_errors(port):
    answer = post(port, "/v1/completions", {"model": "fast", "prompt": "x"})
    assert answer.status == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    answer = _post(port, "/v1/completions", {"model": "fast", "prompt": "x" * MAX_BODY})
    assert answer.status == 413 and "exceeds" in answer.json()["error"]["message"]


def test_kserve_routes_beside_v1(port):
    """The LLM shows in KServe metadata as Triton's LLM convention, and its unary infer is refused as Triton
    refuses ModelInfer for decoupled models; the other models infer as before."""
    status, metadata = get(port, "/v2/models/synth-llm", AUTH)
    assert status == 200 and [t["name"] for t in metadata["inputs"]][:3] == ["text_input", "max_tokens", "stream"]
    text = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    refused = _post(port, "/v2/models/synth-llm/infer", text)
    assert refused.status == 400 and "decoupled" in json.loads(refused.body)["error"]
    numbers = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]}]}
    answered = _post(port, "/v2/models/identity/infer", numbers)
    assert answered.status == 200 and answered.json()["outputs"][0]["data"] == [1.5, 2.5]


def test_the_official_openai_client_reads_every_route(port):
    """OpenAI's own Python SDK (pydantic models of every object) against the server, when installed."""
    openai = pytest.importorskip("openai", reason="the openai package is not installed (pip install 'tailmark[test]')")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0, timeout=30)
    try:
        assert sorted(model.id for model in client.models.list()) == ["fast", "synth-llm"]
        whole = client.completions.create(model="synth-llm", prompt="Hello", max_tokens=5, seed=3)
        stream = client.completions.create(
            model="synth-llm", prompt="Hello", max_tokens=5, seed=3, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
        assert chunks[-1].usage == whole.usage and whole.usage.completion_tokens == 5

        messages = [{"role": "user", "content": "Hello"}]
        chat = client.chat.completions.create(model="fast", messages=messages, max_completion_tokens=4, seed=1,
                                              extra_body={"ignore_eos": True})  # fmt: skip
        assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 4
        streamed = client.chat.completions.create(model="fast", messages=messages, max_completion_tokens=4, seed=1,
                                                  extra_body={"ignore_eos": True}, stream=True)  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in streamed)
        assert text == chat.choices[0].message.content

        with pytest.raises(openai.NotFoundError) as missing:
            client.completions.create(model="nope", prompt="x")
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="fast", prompt="x", max_tokens=500)
        with pytest.raises(openai.AuthenticationError):
            client.with_options(api_key="wrong").models.list()
    finally:
        client.close()
