"""``backend: "tiny_lm"``: an exported TinyLM served on the OpenAI-compatible routes by a real server process. Its
completions, streamed and whole, equal ``complete()`` (the in-process greedy reference) token for token;
concurrent requests of different lengths joining at different times get the same tokens as one-at-a-time
decoding; a cancelled sequence leaves the batch and frees its slot; bad input gets one clear error.

The model is small and untrained (seeded weights, its head scaled so the argmax is never a near-tie): what is
checked is the serving arithmetic, not what the model knows; tests/client/test_accuracy_lm.py serves a trained one.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.request

import pytest
import torch

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from support.sse import get, post
from tailmark.models.tiny_lm import TinyLM, decode, encode
from tailmark.server import errors
from tailmark.server.config import parse_config
from tailmark.server.generative.lm_backend import TinyLmBackend
from tailmark.server.stats import ModelStats
from tailmark.training.workloads.lm.export import complete, load_exported, write_export

ARCHITECTURE = {"d_model": 32, "nhead": 4, "layers": 2, "ff": 64, "context": 96}
SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The in-process reference on one thread, as the server runs it: two OpenMP threads on a busy two-core host
    made each step ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def export_small_model(model_dir, **parameters) -> TinyLM:
    torch.manual_seed(0)
    model = TinyLM(**ARCHITECTURE).eval()
    with torch.no_grad():
        model.out.weight.mul_(8)  # logits far apart: float differences between batch shapes cannot flip an argmax
    write_export(model, model_dir, ARCHITECTURE)
    config = (model_dir / "config.pbtxt").read_text()
    extra = "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in parameters.items())
    (model_dir / "config.pbtxt").write_text(config + extra)
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server: ``lm`` (continuous batching, 8 slots), ``lm-serial`` (one sequence at a time), and the
    in-process reference model both were exported from."""
    root = tmp_path_factory.mktemp("lm-serving")
    export_small_model(root / "lm", max_num_seqs=8)
    export_small_model(root / "lm-serial", continuous_batching="false")
    reference = load_exported(root / "lm")
    with ServerProcess(root, "--http-port", "0", "--metrics-port", "0") as process:
        yield process, int(process.rest_address.rsplit(":", 1)[1]), reference


def scrape(process) -> dict[tuple[str, str], float]:
    url = next(m.group(1) for line in process.lines if (m := re.search(r"metrics on (http://\S+)", line)))
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(m.group(1), m.group(2)): float(m.group(3)) for line in text.splitlines() if (m := SAMPLE.match(line))}


def texts_of(answer) -> list[str]:
    return [choice["text"] for chunk in answer.chunks() for choice in chunk["choices"]]


@pytest.mark.parametrize("prompt", ["def __init__(self, ", "import os\n", "é, naïve: ", "x"])
def test_served_completions_equal_the_in_process_greedy_decode(served, prompt):
    _, port, reference = served
    tokens = 20
    expected = complete(reference, prompt, tokens)
    whole = post(port, "/v1/completions", {"model": "lm", "prompt": prompt, "max_tokens": tokens})
    assert whole.status == 200, whole.body
    [choice] = whole.json()["choices"]
    assert choice["text"] == expected and choice["finish_reason"] == "length"
    assert whole.json()["usage"] == {
        "prompt_tokens": len(encode(prompt)), "completion_tokens": tokens, "total_tokens": len(encode(prompt)) + tokens
    }  # fmt: skip
    streamed = post(port, "/v1/completions", {"model": "lm", "prompt": prompt, "max_tokens": tokens, "stream": True})
    pieces = texts_of(streamed)
    # one event per token; each token's text is its byte through an incremental UTF-8 decoder
    reference_tokens = reference.greedy_decode_cached(encode(prompt), tokens)
    assert len(pieces) == tokens and "".join(pieces) == expected == decode(reference_tokens)
    assert streamed.chunks()[-1]["choices"][0]["finish_reason"] == "length"
    # token ids as the prompt, and the chat route (its prompt is "role: content")
    by_ids = post(port, "/v1/completions", {"model": "lm", "prompt": encode(prompt), "max_tokens": tokens})
    assert by_ids.json()["choices"][0]["text"] == expected
    chat = post(port, "/v1/chat/completions", {"model": "lm", "messages": [{"role": "user", "content": prompt}],
                                               "max_tokens": 8})  # fmt: skip
    assert chat.json()["choices"][0]["message"]["content"] == complete(reference, f"user: {prompt}", 8)


def test_continuous_batching_gives_the_tokens_of_one_at_a_time_decoding(served):
    """Twelve requests of different prompt and output lengths, started 0-33 ms apart so they join a running
    batch at different steps, on both models; every answer equals the reference's, and only ``lm`` ran steps
    with more than one sequence in them."""
    process, port, reference = served
    requests = [(f"{'ab' * (i % 5)}def f{i}(x):\n    return ", 10 + 7 * (i % 6)) for i in range(12)]
    before = scrape(process)

    def run(model: str) -> list[str]:
        answers: list[str] = [""] * len(requests)

        def one(index: int) -> None:
            prompt, tokens = requests[index]
            time.sleep(0.003 * index)
            body = {"model": model, "prompt": prompt, "max_tokens": tokens, "stream": index % 2 == 0}
            answer = post(port, "/v1/completions", body)
            answers[index] = "".join(texts_of(answer)) if body["stream"] else answer.json()["choices"][0]["text"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return answers

    expected = [complete(reference, prompt, tokens) for prompt, tokens in requests]
    assert run("lm") == expected
    assert run("lm-serial") == expected
    after = scrape(process)

    def executions(model: str) -> dict[int, float]:
        sizes = {}
        for (name, labels), value in after.items():
            if name == "tailmark_inference_batch_executions" and f'model="{model}"' in labels:
                size = int(labels.rsplit('batch_size="', 1)[1].rstrip('"'))
                sizes[size] = value - before.get((name, labels), 0)
        return {size: count for size, count in sizes.items() if count}

    assert max(executions("lm")) > 1 and set(executions("lm-serial")) == {1}
    tokens = sum(n for _, n in requests)
    for model in ("lm", "lm-serial"):
        labels = f'model="{model}",version="1"'
        generated = after[("tailmark_llm_generation_tokens_total", labels)]
        assert generated - before.get(("tailmark_llm_generation_tokens_total", labels), 0) == tokens
        assert after[("tailmark_llm_requests_running", labels)] == 0


def test_a_dropped_stream_is_cancelled_and_the_server_serves_on(served):
    process, port, reference = served
    labels = 'model="lm-serial",version="1"'
    before = scrape(process)
    body = {"model": "lm-serial", "prompt": "a", "max_tokens": 95, "stream": True}
    dropped = post(port, "/v1/completions", body, stop_after_events=2)
    assert len(dropped.events) == 2
    answer = post(port, "/v1/completions", {"model": "lm-serial", "prompt": "b", "max_tokens": 5})
    assert answer.json()["choices"][0]["text"] == complete(reference, "b", 5)
    failures = ("nv_inference_request_failure", labels)
    deadline = time.monotonic() + 10
    while (after := scrape(process))[failures] == before.get(failures, 0) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server sees the connection gone when it next writes to it
    assert after[failures] - before.get(failures, 0) == 1
    assert after[("tailmark_llm_requests_running", labels)] == after[("tailmark_llm_requests_waiting", labels)] == 0


def test_cancel_takes_a_sequence_out_between_steps_and_frees_its_slot(tmp_path):
    """In process, so the moment of the cancel is exact: one slot, a sequence cancelled after two tokens, and the
    one waiting behind it takes the slot at the next step and decodes as the reference does."""
    reference = export_small_model(tmp_path / "one", max_num_seqs=1)
    config = parse_config((tmp_path / "one" / "config.pbtxt").read_text(), name="one")
    backend = TinyLmBackend(config, tmp_path / "one", tmp_path / "one" / "1")
    stats = ModelStats("one", "1")

    async def scenario() -> tuple[list[str], str]:
        first = backend.start(stats, "abc", 90)
        second = backend.start(stats, "xyz", 6)
        engine = backend.engine
        received = [(await anext(first)).text, (await anext(first)).text]
        assert list(engine.waiting) == [second] and engine.running == [first]  # one slot: the second waits
        backend.cancel(first)
        assert engine.running == [] and engine.free == [0] and first.done
        text = "".join([token.text async for token in second])
        assert engine.generation_tokens_total < 90  # the cancelled sequence stopped
        return received, text

    try:
        received, text = asyncio.run(scenario())
    finally:
        backend.close()
    assert "".join(received) == complete(reference, "abc", 2) and text == complete(reference, "xyz", 6)
    assert stats.fail.count == 1 and stats.success.count == 1


def test_bad_input_gets_one_clear_error(served, tmp_path):
    _, port, reference = served
    too_long = post(port, "/v1/completions", {"model": "lm", "prompt": "x" * 90, "max_tokens": 10})
    assert too_long.status == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 97 tokens" in too_long.json()["error"]["message"]
    past_context = post(port, "/v1/completions", {"model": "lm", "prompt": "x" * 97})
    assert past_context.status == 400
    # a whole context of prompt still gets its one next token (as the harness's evaluation predicts it)
    whole_context = post(port, "/v1/completions", {"model": "lm", "prompt": "xy" * 48, "max_tokens": 1})
    assert whole_context.json()["choices"][0]["text"] == complete(reference, "xy" * 48, 1)
    empty = post(port, "/v1/completions", {"model": "lm", "prompt": "", "max_tokens": 3})
    assert empty.status == 400 and "empty prompt" in empty.body.decode()
    not_bytes = post(port, "/v1/completions", {"model": "lm", "prompt": [104, 300], "max_tokens": 3})
    assert not_bytes.status == 400 and "token ids are bytes, 0..255" in not_bytes.body.decode()
    unknown = post(port, "/v1/completions", {"model": "no-such-lm", "prompt": "x", "max_tokens": 3})
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "model_not_found"
    status, card = get(port, "/v1/models/lm")
    assert status == 200 and card["max_model_len"] == 97
    # a config the backend cannot run leaves the model UNAVAILABLE with the reason, in one line
    export_small_model(tmp_path / "bad", device="tpu")
    config = parse_config((tmp_path / "bad" / "config.pbtxt").read_text(), name="bad")
    with pytest.raises(Exception, match="device='tpu'"):
        TinyLmBackend(config, tmp_path / "bad", tmp_path / "bad" / "1")
    # what the OpenAI routes check before they start a sequence, the backend checks too (for every frontend)
    config = parse_config((tmp_path / "bad" / "config.pbtxt").read_text().replace('"tpu"', '"cpu"'), name="bad")
    backend = TinyLmBackend(config, tmp_path / "bad", tmp_path / "bad" / "1")
    with pytest.raises(errors.InvalidInput, match="do not fit the model's 97 tokens"):
        backend.start(ModelStats("bad", "1"), "abc", 95)


def test_the_default_repository_serves_an_untrained_tiny_lm_for_timing(tmp_path):
    """``tiny-lm`` in the default repository: the benchmark-size model with seeded weights, labelled untrained,
    served by the real backend (what an embedded generative scenario times)."""
    from tailmark.server.default_repository import build

    repository = build(tmp_path / "repo")
    config = parse_config((repository / "tiny-lm" / "config.pbtxt").read_text(), name="tiny-lm")
    assert config.backend == "tiny_lm" and config.parameters["weights"].string_value.startswith("untrained")
    reference = load_exported(repository / "tiny-lm")
    assert reference.context == 64 and len(reference.blocks.layers) == 3
    with ServerProcess(repository, "--http-port", "0") as process:
        port = int(process.rest_address.rsplit(":", 1)[1])
        answer = post(port, "/v1/completions", {"model": "tiny-lm", "prompt": "import os\n", "max_tokens": 8})
        assert answer.status == 200 and answer.json()["choices"][0]["text"] == complete(reference, "import os\n", 8)
        status, card = get(port, "/v1/models/tiny-lm")
        assert status == 200 and card["max_model_len"] == 65


def test_a_failing_step_ends_its_sequences_with_the_error_and_the_next_request_runs(tmp_path):
    reference = export_small_model(tmp_path / "m")
    config = parse_config((tmp_path / "m" / "config.pbtxt").read_text(), name="m")
    backend = TinyLmBackend(config, tmp_path / "m", tmp_path / "m" / "1")
    stats = ModelStats("m", "1")

    async def scenario() -> str:
        engine = backend.bind(stats)
        compute = engine._compute
        engine._compute = lambda decode, prefill: (_ for _ in ()).throw(RuntimeError("kernel failed"))
        doomed = [backend.start(stats, "abc", 5), backend.start(stats, "de", 3)]
        for sequence in doomed:
            with pytest.raises(RuntimeError, match=r"the model failed.*kernel failed"):
                [token async for token in sequence]
        assert engine.running == [] and not engine.waiting and sorted(engine.free) == list(range(engine.cache.slots))
        engine._compute = compute
        return "".join([token.text async for token in backend.start(stats, "abc", 5)])

    try:
        assert asyncio.run(scenario()) == complete(reference, "abc", 5)
    finally:
        backend.close()


def test_kserve_streaming_counts_the_bytes_served(served, tmp_path):
    """``tailmark run --transport grpc-stream`` against the lm: its config declares the vLLM backend's
    return_num_* inputs, so the client counts the tokens the server served (bytes), not by its own rule."""
    process, _, _ = served
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", process.target, "--transport", "grpc-stream", "--model", "lm", "--scenario",
        "concurrency", "--concurrency", "2", "--duration", "1", "--warmup", "0.2", "--min-queries", "4",
        "--input-tokens", "8", "--output-tokens", "12", "--ignore-eos", "--no-calibration", "--no-progress",
        "--out", str(out), timeout_s=120,
    )  # fmt: skip
    assert run.returncode in (0, 3), run.stderr
    tokens = scenario(results(out), "concurrency")["classes"]["all"]["tokens"]
    assert tokens["requests"] >= 4 and tokens["token_source"]["output"] == {"usage": tokens["requests"]}
    assert tokens["output_tokens"]["p50"] == 12  # bytes, one a response (the 4-character rule would count fewer)
