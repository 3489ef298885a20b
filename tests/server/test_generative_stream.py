"""ModelStreamInfer for the synthetic LLM in Triton's LLM convention, driven by tritonclient.grpc (NVIDIA's own
client) against a real ``tailmark serve`` on each gRPC stack: one response per token with the request's id and
``triton_final_response``, the empty final response when asked, ``stream`` false, ``ignore_eos``, settings as
request parameters, the vLLM backend's extra outputs, errors in-band with the stream going on, the model's
config and metadata, and a cancelled stream freeing the model's slots."""

from __future__ import annotations

import queue
import time
import urllib.request

import numpy as np
import pytest

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")

from support.repository import llm_config  # noqa: E402
from support.serve import ServerProcess  # noqa: E402
from tailmark.server.default_repository import SYNTHETIC_CONFIGS, write_model  # noqa: E402
from tailmark.server.generative.tokenizer import count_tokens  # noqa: E402

FAST = """
parameters { key: "prefill_base_ms" value: { string_value: "2" } }
parameters { key: "decode_base_ms" value: { string_value: "1" } }
parameters { key: "decode_per_sequence_ms" value: { string_value: "0" } }
parameters { key: "max_model_len" value: { string_value: "200" } }
parameters { key: "output_length" value: { string_value: "uniform" } }
"""
SLOW = """
parameters { key: "prefill_base_ms" value: { string_value: "2" } }
parameters { key: "decode_base_ms" value: { string_value: "50" } }
parameters { key: "decode_per_sequence_ms" value: { string_value: "0" } }
"""


@pytest.fixture(scope="module", params=["aio", "h2", "sync"])
def served(request, tmp_path_factory):
    """``fast``: 2 ms to the first token, 1 ms a token, 200-token context, uniform lengths without ignore_eos;
    ``slow``: 50 ms a token (for cancellation); ``identity`` beside them."""
    root = tmp_path_factory.mktemp("stream")
    head = SYNTHETIC_CONFIGS["synth-llm"].split("parameters", 1)[0]
    write_model(root, "fast", head + FAST)
    write_model(root, "slow", head + SLOW)
    write_model(root, "identity", SYNTHETIC_CONFIGS["identity"])
    bare = llm_config(prefill_base_ms=2, prefill_per_token_ms=0, decode_base_ms=1, decode_per_sequence_ms=0)
    write_model(root, "bare", bare)  # declares text_input only
    with ServerProcess(root, "--grpc-stack", request.param, "--metrics-port", "0") as process:
        yield process


@pytest.fixture
def client(served):
    with tritonclient_grpc.InferenceServerClient(served.target) as c:
        yield c


def _inputs(prompt: str, max_tokens: int | None = None, *, stream: bool = True, ignore_eos: bool = False, **more):
    grpcclient = tritonclient_grpc
    tensors = []

    def add(name, datatype, value):
        tensor = grpcclient.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(np.array([value], dtype=object if datatype == "BYTES" else None))
        tensors.append(tensor)

    add("text_input", "BYTES", prompt.encode())
    if max_tokens is not None:
        tensor = grpcclient.InferInput("max_tokens", [1], "INT32")
        tensor.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
        tensors.append(tensor)
    add("stream", "BOOL", stream)
    if ignore_eos:
        add("ignore_eos", "BOOL", True)
    for name, value in more.items():
        add(name, "BOOL", value)
    return tensors


def _stream(client, requests, *, timeout_s: float = 20.0):
    """Send ``requests`` [(model, inputs, id, parameters)] on one stream; return every (result, error) received,
    until each request has ended (an error, or its final response: tritonclient hides an error's id)."""
    received: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    out = []
    try:
        for model, inputs, request_id, parameters in requests:
            empty = bool(parameters and parameters.pop("empty", 0))
            client.async_stream_infer(
                model, inputs, request_id=request_id, parameters=parameters, enable_empty_final_response=empty
            )
        open_requests = len(requests)
        deadline = time.monotonic() + timeout_s
        while open_requests:
            result, error = received.get(timeout=max(deadline - time.monotonic(), 0.1))
            out.append((result, error))
            if error is not None or result.get_response().parameters["triton_final_response"].bool_param:
                open_requests -= 1
    finally:
        client.stop_stream()
    return out


def _texts(results):
    texts = [r.as_numpy("text_output") for r, e in results if r is not None]
    return [t[0].decode() for t in texts if t is not None]


def test_one_response_per_token_with_id_and_final_flag(client):
    results = _stream(client, [("fast", _inputs("Hello, world!", 12, ignore_eos=True), "r1", None)])
    assert all(error is None for _, error in results)
    responses = [r.get_response() for r, _ in results]
    assert [r.id for r in responses] == ["r1"] * 12 and {r.model_name for r in responses} == {"fast"}
    flags = [r.parameters["triton_final_response"].bool_param for r in responses]
    assert flags == [False] * 11 + [True]
    texts = _texts(results)
    assert len(texts) == 12 and all(t.startswith(" ") and len(t) == 4 for t in texts)


def test_empty_final_response_when_asked(client):
    params = {"empty": 1}
    results = _stream(client, [("fast", _inputs("Hi", 5, ignore_eos=True), "e1", params)])
    responses = [r.get_response() for r, _ in results]
    assert [r.parameters["triton_final_response"].bool_param for r in responses] == [False] * 5 + [True]
    last = responses[-1]
    assert last.id == "e1" and last.model_name == "fast" and not last.outputs and not last.raw_output_contents
    assert len(_texts(results)) == 5


def test_stream_false_answers_once_with_the_same_text(client):
    streamed = "".join(_texts(_stream(client, [("fast", _inputs("same seed", 9, ignore_eos=True), "a", None)])))
    whole = _stream(client, [("fast", _inputs("same seed", 9, stream=False, ignore_eos=True), "b", None)])
    assert len(whole) == 1 and whole[0][1] is None
    response = whole[0][0].get_response()
    assert response.id == "b" and response.parameters["triton_final_response"].bool_param
    assert _texts(whole) == [streamed] and len(streamed.split()) == 9


def test_ignore_eos_runs_to_max_tokens_and_request_parameters_count(client):
    """``uniform`` lengths end early without ignore_eos; with it (a tensor, or a request parameter as the vLLM
    backend reads them) every answer has max_tokens tokens. The extra outputs count them."""
    free = [len(_texts(_stream(client, [("fast", _inputs(f"p{i}", 40), str(i), None)]))) for i in range(6)]
    assert all(1 <= n <= 40 for n in free) and min(free) < 40
    by_parameter = _stream(
        client,
        [("fast", _inputs("p0", None, return_num_output_tokens=True, return_num_input_tokens=True,
                           return_finish_reason=True), "q", {"max_tokens": 17, "ignore_eos": True})],
    )  # fmt: skip
    assert len(by_parameter) == 17
    last = by_parameter[-1][0]
    assert [r.as_numpy("num_output_tokens")[0] for r, _ in by_parameter] == [1] * 17
    assert last.as_numpy("num_input_tokens")[0] == count_tokens("p0")
    assert last.as_numpy("finish_reason")[0] == b"length"
    assert by_parameter[0][0].as_numpy("finish_reason")[0] == b"None"


def test_errors_in_band_and_the_stream_goes_on(client):
    requests = [
        ("fast", _inputs("x" * 10, 500), "too-long", None),
        ("no_such_model", _inputs("hi", 3), "unknown", None),
        ("fast", _inputs("fine", 3, ignore_eos=True), "ok", None),
    ]
    results = _stream(client, requests)
    errors = [str(e) for _, e in results if e is not None]
    assert len(errors) == 2
    assert any("context" in e for e in errors) and any("no_such_model" in e for e in errors)
    assert len([r for r, e in results if e is None and r.get_response().id == "ok"]) == 3


def test_a_model_without_a_stream_input_streams(client):
    """Nothing can ask a model that declares no ``stream`` input: decoupled, it answers token by token."""
    text = tritonclient_grpc.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hi"], dtype=object))
    results = _stream(client, [("bare", [text], "b", {"max_tokens": 6, "ignore_eos": True})])
    assert len(_texts(results)) == 6 and len(results) == 6


def test_missing_prompt_is_refused(client):
    tensor = tritonclient_grpc.InferInput("max_tokens", [1], "INT32")
    tensor.set_data_from_numpy(np.array([3], dtype=np.int32))
    results = _stream(client, [("fast", [tensor], "m", None)])
    assert len(results) == 1 and "text_input" in str(results[0][1])


def test_config_and_metadata_say_decoupled_in_the_convention(client):
    config = client.get_model_config("fast").config
    assert config.model_transaction_policy.decoupled
    metadata = client.get_model_metadata("fast")
    inputs = {t.name: t.datatype for t in metadata.inputs}
    assert inputs["text_input"] == "BYTES" and inputs["stream"] == "BOOL" and inputs["ignore_eos"] == "BOOL"
    assert inputs["max_tokens"] == "INT32" and "seed" in inputs
    assert {t.name for t in metadata.outputs} >= {"text_output", "num_output_tokens"}


def _running(served) -> float:
    text = urllib.request.urlopen(served.metrics_url, timeout=5).read().decode()
    values = [line.split()[-1] for line in text.splitlines() if line.startswith("tailmark_llm_requests_running")
              and 'model="slow"' in line]  # fmt: skip
    return float(values[0]) if values else 0.0


def test_a_cancelled_stream_frees_its_sequences(served, client):
    received: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    for i in range(3):
        client.async_stream_infer("slow", _inputs(f"c{i}", 100, ignore_eos=True), request_id=f"c{i}")
    received.get(timeout=10)  # a first token: the sequences are being admitted
    assert _wait_for(lambda: _running(served) == 3)
    client.stop_stream(cancel_requests=True)
    assert _wait_for(lambda: _running(served) == 0)  # each at 50 ms a token would run 5 s more


def _wait_for(condition, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_more_calls_at_once_than_the_sync_stack_has_threads(served):
    """16 calls in flight, each its own stream (as the grpc-stream client sends them), over the sync stack's
    8 RPC threads too: the generation runs on its own loop, so no call waits for a thread another one holds."""
    import asyncio

    from tailmark.client.grpc_stream_transport import GrpcStreamTransport
    from tailmark.client.prompts import TritonPromptPool

    async def scenario():
        transport = await GrpcStreamTransport.connect(served.target, timeout_s=20)
        try:
            info = await transport.model_info("slow")
            pool = TritonPromptPool(info, count=16, input_tokens=5, output_tokens=4, seed=1, ignore_eos=True)
            return await asyncio.gather(*(transport.infer(pool.payload(i)) for i in range(16)))
        finally:
            await transport.aclose()

    started = time.monotonic()
    answers = asyncio.run(scenario())
    assert [len(a.chunk_ns) for a in answers] == [4] * 16 and {a.output_tokens for a in answers} == {4}
    assert time.monotonic() - started < 5  # together: about 4 steps of 50 ms, not 16 answers one after another
