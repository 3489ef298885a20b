"""``tailmark run --transport openai`` against ``tailmark serve``'s synthetic LLM, whose timings are known.

One sequence at a time (concurrency 1), the model's first token comes after its prefill, 20 ms + 0.05 ms per
input token (200 tokens: 30 ms), and every later one after a decode step of 5 ms + 0.5 ms per sequence in
flight (5.5 ms). The client's medians must land there: never below the model (its clock runs back to back),
above it by at most what loopback, HTTP and a busy 2-core host add (``NOISE_MS``).

Coordinated omission, for tokens: an open-loop run capped at one request in flight, with one server step
stalled 400 ms. The requests that arrived during the stall waited in the client: their TTFT from the intended
send shows the stall, their TTFT from the send does not. Only the stalled request itself is slow from its send.
"""

from __future__ import annotations

import pytest

from support.repository import llm_config
from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.server.default_repository import write_model

PREFILL_BASE_MS, PREFILL_PER_TOKEN_MS = 20.0, 0.05
DECODE_BASE_MS, DECODE_PER_SEQUENCE_MS = 5.0, 0.5
INPUT_TOKENS = 200
STALL_MS, STALL_AT = 400.0, 8
NOISE_MS = 15.0  # loopback, HTTP and a busy host's wake-ups on top of the model's times


def _config(**parameters: float) -> str:
    return llm_config(
        prefill_base_ms=PREFILL_BASE_MS, prefill_per_token_ms=PREFILL_PER_TOKEN_MS, decode_base_ms=DECODE_BASE_MS,
        decode_per_sequence_ms=DECODE_PER_SEQUENCE_MS, **parameters,
    )  # fmt: skip


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("generative-client")
    write_model(root, "llm", _config())
    write_model(root, "llm-stall", _config(stall_ms=STALL_MS, stall_after_requests=STALL_AT))
    with ServerProcess(root, "--http-port", "0") as process:
        yield "http://" + process.rest_address


def _run(target: str, out, *args: str) -> dict:
    run = tailmark(
        "run", "--target", target, "--transport", "openai", "--input-tokens", str(INPUT_TOKENS), "--ignore-eos",
        "--no-calibration", "--no-progress", "--out", str(out), *args, timeout_s=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return results(out)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_measured_ttft_and_itl_match_the_configured_model(llm_server, tmp_path, api):
    doc = _run(
        llm_server, tmp_path / api, "--model", "llm", "--api", api, "--scenario", "concurrency", "--concurrency", "1",
        "--duration", "2", "--warmup", "0.3", "--min-queries", "10", "--output-tokens", "16",
    )  # fmt: skip
    tokens = scenario(doc, "concurrency")["classes"]["all"]["tokens"]
    assert tokens["token_source"]["output"] == {"usage": tokens["requests"]}
    assert tokens["output_tokens"]["p50"] == 16  # ignore_eos: every answer runs to max_tokens
    expected_ttft = PREFILL_BASE_MS + PREFILL_PER_TOKEN_MS * INPUT_TOKENS  # 30 ms: the served input is ours
    if api == "completions":
        assert tokens["input_tokens"]["p50"] == INPUT_TOKENS  # the same tokenizer rule on both sides
    else:  # chat's template adds the role's tokens to the served input
        expected_ttft = PREFILL_BASE_MS + PREFILL_PER_TOKEN_MS * tokens["input_tokens"]["p50"]
    expected_gap = DECODE_BASE_MS + DECODE_PER_SEQUENCE_MS * 1
    latency = tokens["latency_ms"]
    assert expected_ttft - 1.0 <= latency["ttft"]["p50"] <= expected_ttft + NOISE_MS, latency["ttft"]
    assert expected_gap - 1.0 <= latency["itl"]["p50"] <= expected_gap + 3.0, latency["itl"]
    assert expected_gap - 1.0 <= latency["tpot"]["p50"] <= expected_gap + 3.0, latency["tpot"]
    assert latency["itl"]["count"] == 15 * tokens["requests"]  # every gap of every answer


def test_a_stall_shows_in_ttft_from_the_intended_send_not_from_the_send(llm_server, tmp_path):
    """10 arrivals/s (Poisson; ~47 ms each, so about half busy), one in flight at most, one server step stalled by
    400 ms at request 8: about four arrivals queue in the client behind it."""
    doc = _run(
        llm_server, tmp_path / "stall", "--model", "llm-stall", "--scenario", "server", "--target-qps", "10",
        "--max-outstanding", "1", "--duration", "4", "--warmup", "0", "--min-queries", "30", "--output-tokens", "4",
        "--seed", "3",
    )  # fmt: skip
    everything = scenario(doc, "server")["classes"]["all"]
    latency = everything["tokens"]["latency_ms"]
    ttft, sent = latency["ttft"], latency["ttft_sent"]
    assert sent["max"] >= STALL_MS and ttft["max"] >= STALL_MS  # the stalled request itself
    # from the send only the stalled request is slow (1 of ~40: under p90); from the intended send the
    # requests queued behind it are slow too (more than 10 %)
    assert sent["p90"] < STALL_MS / 4, sent
    assert ttft["p90"] > STALL_MS / 4, ttft
    assert everything["latency_ms"]["send_lag"]["max"] >= STALL_MS / 4  # the queueing is reported, not hidden


def test_offline_with_whole_answers(llm_server, tmp_path):
    """Offline over non-streamed requests: every sample sent at once, each answer's text arriving whole."""
    doc = _run(
        llm_server, tmp_path / "offline", "--model", "llm", "--scenario", "offline", "--target-qps", "10",
        "--duration", "2", "--min-queries", "20", "--output-tokens", "8", "--no-stream", "--warmup", "0",
    )  # fmt: skip
    everything = scenario(doc, "offline")["classes"]["all"]
    tokens = everything["tokens"]
    assert everything["error_count"] == 0 and tokens["requests"] == everything["ok_count"] >= 20
    assert tokens["streamed"] == 0 and tokens["latency_ms"]["itl"]["count"] == 0  # no gaps without a stream
    assert tokens["output_tokens_total"] == 8 * tokens["requests"]
    # a whole answer's first token is its last: TTFT is the end-to-end latency but for the few µs to ms between
    # the transport's parse and the dispatcher's stamp (more on a busy host)
    ttft, e2e = tokens["latency_ms"]["ttft"]["p50"], tokens["latency_ms"]["e2e"]["p50"]
    assert 0.9 * e2e - 1.0 <= ttft <= e2e, (ttft, e2e)
