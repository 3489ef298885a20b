"""``tailmark run --transport grpc-stream`` (KServe ModelStreamInfer, Triton's LLM convention) against
``tailmark serve``'s synthetic LLM, whose timings are known; the same model and bounds as the openai transport's
tests (test_generative_e2e.py).

One sequence at a time, the first token comes after 20 ms + 0.05 ms per input token (200 tokens: 30 ms) and
every later one after 5.5 ms; the measured medians must land there, above the model by at most ``NOISE_MS``
(TTFT) or 3 ms (gaps). When they do not and the server itself counted many of its steps late
(``tailmark_llm_steps_late_total``: the host held its event loop), the test is skipped with that evidence:
the model could not keep its own time, so the client cannot be judged against it.

A 400 ms server stall under a one-in-flight cap shows in TTFT from the intended send, not from the send; the
cut requests of a cancelling run are counted apart and the server frees their sequences; a model that
declares only ``text_input`` gets max_tokens as a request parameter and its tokens are counted by the client.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from support.repository import llm_config
from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.client.prompts import TritonPromptPool
from tailmark.client.transport import ModelInfo, TensorInfo
from tailmark.protos import inference_pb2 as pb
from tailmark.server.default_repository import SYNTHETIC_CONFIGS, write_model

PREFILL_BASE_MS, PREFILL_PER_TOKEN_MS = 20.0, 0.05
DECODE_BASE_MS, DECODE_PER_SEQUENCE_MS = 5.0, 0.5
INPUT_TOKENS = 200
STALL_MS, STALL_AT = 400.0, 8
NOISE_MS = 15.0  # loopback, gRPC and a busy host's wake-ups on top of the model's times
LATE_SHARE = 0.1  # of the server's steps ending over 1 ms late: the host, not the client, broke the model's time
CONVENTION = SYNTHETIC_CONFIGS["synth-llm"].split("parameters", 1)[0]  # synth-llm's inputs and outputs


def _config(convention: bool = True, **parameters: float) -> str:
    text = llm_config(
        prefill_base_ms=PREFILL_BASE_MS, prefill_per_token_ms=PREFILL_PER_TOKEN_MS, decode_base_ms=DECODE_BASE_MS,
        decode_per_sequence_ms=DECODE_PER_SEQUENCE_MS, **parameters,
    )  # fmt: skip
    return CONVENTION + "parameters" + text.split("parameters", 1)[1] if convention else text


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc-stream-client")
    write_model(root, "llm", _config())
    write_model(root, "llm-stall", _config(stall_ms=STALL_MS, stall_after_requests=STALL_AT))
    write_model(root, "llm-bare", _config(convention=False))  # declares text_input only
    with ServerProcess(root, "--metrics-port", "0") as process:
        yield process


def _metric(server, name: str, model: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    pattern = rf"^{name}\{{[^}}]*model=\"{model}\"[^}}]*\}} (\S+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


def _run(server, out, *args: str) -> dict:
    run = tailmark(
        "run", "--target", server.target, "--transport", "grpc-stream", "--input-tokens", str(INPUT_TOKENS),
        "--no-calibration", "--no-progress", "--out", str(out), *args, timeout_s=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return results(out)


def test_measured_ttft_and_itl_match_the_configured_model(llm_server, tmp_path):
    steps = [_metric(llm_server, n, "llm") for n in ("tailmark_llm_steps_total", "tailmark_llm_steps_late_total")]
    doc = _run(
        llm_server, tmp_path / "timing", "--model", "llm", "--scenario", "concurrency", "--concurrency", "1",
        "--duration", "2", "--warmup", "0.3", "--min-queries", "10", "--output-tokens", "16", "--ignore-eos",
    )  # fmt: skip
    tokens = scenario(doc, "concurrency")["classes"]["all"]["tokens"]
    # the server reported the tokens (num_input_tokens / num_output_tokens), and served what was asked
    assert tokens["token_source"]["output"] == {"usage": tokens["requests"]}
    assert tokens["output_tokens"]["p50"] == 16 and tokens["input_tokens"]["p50"] == INPUT_TOKENS
    assert doc["environment"]["client_transport"]["kind"] == "grpc-stream"
    latency = tokens["latency_ms"]
    assert latency["itl"]["count"] == 15 * tokens["requests"]  # one response per token, every gap recorded
    expected_ttft = PREFILL_BASE_MS + PREFILL_PER_TOKEN_MS * INPUT_TOKENS
    expected_gap = DECODE_BASE_MS + DECODE_PER_SEQUENCE_MS * 1
    within = (
        expected_ttft - 1.0 <= latency["ttft"]["p50"] <= expected_ttft + NOISE_MS
        and expected_gap - 1.0 <= latency["itl"]["p50"] <= expected_gap + 3.0
        and expected_gap - 1.0 <= latency["tpot"]["p50"] <= expected_gap + 3.0
    )
    if not within:
        total = _metric(llm_server, "tailmark_llm_steps_total", "llm") - steps[0]
        late = _metric(llm_server, "tailmark_llm_steps_late_total", "llm") - steps[1]
        if total and late / total > LATE_SHARE:
            pytest.skip(f"the host held the server: {late:.0f} of {total:.0f} model steps ended over 1 ms late "
                        f"(TTFT p50 {latency['ttft']['p50']} ms, ITL p50 {latency['itl']['p50']} ms)")  # fmt: skip
    assert expected_ttft - 1.0 <= latency["ttft"]["p50"] <= expected_ttft + NOISE_MS, latency["ttft"]
    assert expected_gap - 1.0 <= latency["itl"]["p50"] <= expected_gap + 3.0, latency["itl"]
    assert expected_gap - 1.0 <= latency["tpot"]["p50"] <= expected_gap + 3.0, latency["tpot"]


def test_a_stall_shows_in_ttft_from_the_intended_send_not_from_the_send(llm_server, tmp_path):
    """10 arrivals/s (Poisson), one in flight at most, one server step stalled 400 ms at request 8: the
    arrivals behind it wait in the client."""
    doc = _run(
        llm_server, tmp_path / "stall", "--model", "llm-stall", "--scenario", "server", "--target-qps", "10",
        "--max-outstanding", "1", "--duration", "4", "--warmup", "0", "--min-queries", "30", "--output-tokens", "4",
        "--ignore-eos", "--seed", "3",
    )  # fmt: skip
    everything = scenario(doc, "server")["classes"]["all"]
    ttft, sent = everything["tokens"]["latency_ms"]["ttft"], everything["tokens"]["latency_ms"]["ttft_sent"]
    assert sent["max"] >= STALL_MS and ttft["max"] >= STALL_MS  # the stalled request itself
    assert sent["p90"] < STALL_MS / 4, sent
    assert ttft["p90"] > STALL_MS / 4, ttft
    assert everything["latency_ms"]["send_lag"]["max"] >= STALL_MS / 4  # the queueing is reported, not hidden


def test_cancelled_calls_are_counted_apart_and_free_the_server(llm_server, tmp_path):
    failures_before = _metric(llm_server, "nv_inference_request_failure", "llm")
    doc = _run(
        llm_server, tmp_path / "cancel", "--model", "llm", "--scenario", "poisson", "--target-qps", "20",
        "--duration", "1", "--warmup", "0", "--min-queries", "16", "--input-tokens", "20", "--output-tokens", "40",
        "--ignore-eos", "--cancel-after-tokens", "3", "--cancel-share", "0.5",
    )  # fmt: skip
    total = scenario(doc, "poisson")["classes"]["all"]
    cancelled = total["cancelled_count"]
    assert total["error_count"] == 0 and cancelled > 0 and total["ok_count"] > 0
    assert total["tokens"]["requests"] == total["ok_count"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # each cancelled call freed its sequence and counted a failure
        running = _metric(llm_server, "tailmark_llm_requests_running", "llm")
        failed = _metric(llm_server, "nv_inference_request_failure", "llm") - failures_before
        if running == 0 and failed == cancelled:
            break
        time.sleep(0.1)
    assert (running, failed) == (0, cancelled)


def test_a_model_with_text_input_only_gets_parameters_and_counted_tokens(llm_server, tmp_path):
    """No max_tokens, stream or return_* inputs declared: max_tokens and ignore_eos travel as request parameters,
    the answer streams (a decoupled model that cannot be asked does) and the client counts its tokens."""
    doc = _run(
        llm_server, tmp_path / "bare", "--model", "llm-bare", "--scenario", "concurrency", "--concurrency", "2",
        "--duration", "1", "--warmup", "0", "--min-queries", "6", "--input-tokens", "20", "--output-tokens", "8",
        "--ignore-eos",
    )  # fmt: skip
    everything = scenario(doc, "concurrency")["classes"]["all"]
    tokens = everything["tokens"]
    assert everything["error_count"] == 0 and tokens["requests"] >= 6
    assert tokens["streamed"] == tokens["requests"] and tokens["latency_ms"]["itl"]["count"] == 7 * tokens["requests"]
    assert tokens["token_source"]["output"] == {"counted": tokens["requests"]}
    assert tokens["output_tokens_total"] == 8 * tokens["requests"]  # ignore_eos and max_tokens were honoured


def test_sessions_carry_the_history_over_grpc_stream(llm_server, tmp_path):
    doc = _run(
        llm_server, tmp_path / "sessions", "--model", "llm", "--scenario", "concurrency", "--concurrency", "2",
        "--turns", "2", "--think-time-ms", "10", "--duration", "1", "--warmup", "0", "--min-queries", "6",
        "--input-tokens", "20", "--output-tokens", "5", "--ignore-eos",
    )  # fmt: skip
    per_turn = scenario(doc, "concurrency")["sessions"]["per_turn"]
    assert per_turn[0]["input_tokens_mean"] == 20
    assert per_turn[1]["input_tokens_mean"] == 20 + 5 + 20  # the first prompt, its answer, the new text


def _info(*inputs: tuple[str, str]) -> ModelInfo:
    tensors = tuple(TensorInfo(name, datatype, (1,)) for name, datatype in inputs)
    return ModelInfo(name="m", version="1", platform="x", inputs=tensors, outputs=(), max_batch_size=0)


def _request(pool: TritonPromptPool) -> pb.ModelInferRequest:
    return pb.ModelInferRequest.FromString(pool.payload(0))


def test_payloads_follow_what_the_model_declares():
    common = dict(count=4, input_tokens=12, output_tokens=7, seed=1, ignore_eos=True)
    tensors = _request(TritonPromptPool(_info(("text_input", "BYTES"), ("max_tokens", "INT64"), ("stream", "BOOL"),
                                              ("ignore_eos", "BOOL")), **common))  # fmt: skip
    assert [(t.name, t.datatype) for t in tensors.inputs] == [
        ("text_input", "BYTES"), ("stream", "BOOL"), ("max_tokens", "INT64"), ("ignore_eos", "BOOL")
    ]  # fmt: skip
    assert int.from_bytes(tensors.raw_input_contents[2], "little") == 7
    assert tensors.parameters["triton_enable_empty_final_response"].bool_param
    declared = (("text_input", "BYTES"), ("stream", "BOOL"), ("sampling_parameters", "BYTES"),
                ("return_num_output_tokens", "BOOL"))  # fmt: skip
    vllm = _request(TritonPromptPool(_info(*declared), **common))
    names = [t.name for t in vllm.inputs]
    assert names == ["text_input", "stream", "sampling_parameters", "return_num_output_tokens"]
    assert json.loads(vllm.raw_input_contents[2][4:]) == {"max_tokens": 7, "ignore_eos": True}
    bare = _request(TritonPromptPool(_info(("text_input", "BYTES")), **common))
    assert [t.name for t in bare.inputs] == ["text_input"]
    assert bare.parameters["max_tokens"].int64_param == 7 and bare.parameters["ignore_eos"].bool_param


def test_builtin_default_over_grpc_stream(tmp_path):
    """--transport grpc-stream with no --target or --model: the built-in server's synth-llm over its gRPC port."""
    out = tmp_path / "builtin"
    run = tailmark(
        "run", "--transport", "grpc-stream", "--scenario", "concurrency", "--concurrency", "2", "--duration", "1",
        "--warmup", "0.2", "--min-queries", "5", "--input-tokens", "20", "--output-tokens", "4", "--ignore-eos",
        "--no-calibration", "--no-progress", "--out", str(out), timeout_s=300,
    )  # fmt: skip
    assert run.returncode in (0, 3), run.stderr  # 3: INVALID (a short run), still measured
    doc = results(out)
    assert doc["environment"]["target"]["model"] == "synth-llm" and doc["environment"]["target"]["embedded"]
    assert not doc["environment"]["target"]["address"].startswith("http")  # the gRPC port, not --http-port
    everything = scenario(doc, "concurrency")["classes"]["all"]
    assert everything["ok_count"] > 0 and everything["error_count"] == 0, everything["errors"]
    tokens = everything["tokens"]
    assert tokens["output_tokens"]["min"] == tokens["output_tokens"]["max"] == 4
    assert tokens["token_source"]["output"] == {"usage": tokens["requests"]}
    assert tokens["latency_ms"]["ttft"]["p50"] >= 20.0  # never faster than the model's 20 ms prefill
