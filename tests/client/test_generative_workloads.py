"""The shared-prefix workload and request cancellation, against ``tailmark serve``'s synthetic LLM.

Prefix reuse: the pool's share of prefixed prompts is exact and follows the seed; the run counts, per answered
request, whether it carried a prefix, and (warm-up 0, no calibration: the measured requests are the first
draws of the sample seed) the count equals what the seed's draws give.

Cancellation: the cut requests are counted apart (no errors), the server saw each one go (its failure count
grows by exactly that many) and freed the sequence (``tailmark_llm_requests_running`` back to 0).
"""

from __future__ import annotations

import random
import re
import time
import urllib.request

import pytest

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.client.generation import count_tokens
from tailmark.client.prefix_workload import PREFIX_INDEX_BASE, PrefixSpec
from tailmark.client.prompts import PromptPool, prompt_text
from tailmark.client.transport import ModelInfo

INFO = ModelInfo(name="synth-llm", version="", platform="openai", inputs=(), outputs=(), max_batch_size=0)


@pytest.fixture(scope="module")
def server():
    with ServerProcess(None, "--http-port", "0", "--metrics-port", "0") as process:
        yield process


def _pool(seed: int, reuse: float = 0.8, count: int = 64) -> PromptPool:
    spec = PrefixSpec(tokens=30, count=3, reuse=reuse)
    return PromptPool(INFO, api="completions", count=count, input_tokens=80, output_tokens=4, seed=seed, prefix=spec)


def test_the_pool_prefixes_an_exact_seeded_share_of_its_prompts():
    pool = _pool(seed=5)
    bodies = [pool.payload(i) for i in range(64)]
    prefixes = [pool.prefix_of(b) for b in bodies]
    assert sum(p >= 0 for p in prefixes) == round(0.8 * 64)
    assert {p for p in prefixes if p >= 0} == {0, 1, 2}  # every prefix is used
    for i, prefix in enumerate(prefixes):
        text = pool.prompt(i)
        assert count_tokens(text) == 80  # the prefix does not change the prompt's length
        starts = [prompt_text(PREFIX_INDEX_BASE + j, 30, 5) for j in range(3)]
        assert [text.startswith(s) for s in starts] == [j == prefix for j in range(3)]
    again = _pool(seed=5)
    assert [again.prefix_of(again.payload(i)) for i in range(64)] == prefixes  # the seed decides
    other = _pool(seed=6)
    assert [other.prefix_of(other.payload(i)) for i in range(64)] != prefixes
    none = _pool(seed=5, reuse=0.0)
    assert all(none.prefix_of(none.payload(i)) == -1 for i in range(64))


def test_prefix_reuse_is_counted_per_answered_request(server, tmp_path):
    out, seed = tmp_path / "prefix", 11
    run = tailmark(
        "run", "--target", "http://" + server.rest_address, "--transport", "openai", "--model", "synth-llm",
        "--scenario", "poisson", "--target-qps", "40", "--duration", "1", "--warmup", "0", "--min-queries", "30",
        "--input-tokens", "80", "--output-tokens", "2", "--shared-prefix-tokens", "30", "--prefix-count", "3",
        "--prefix-reuse", "0.5", "--sample-seed", str(seed), "--pool-size", "64", "--no-calibration",
        "--no-progress", "--out", str(out), timeout_s=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    tokens = scenario(doc, "poisson")["classes"]["all"]["tokens"]
    counted = tokens["prefix_reuse"]
    assert counted["shared"] + counted["unique"] == tokens["requests"]
    pool, draws = _pool(seed, reuse=0.5), random.Random(seed)
    expected = sum(pool.prefix_of(pool.payload(draws.randrange(64))) >= 0 for _ in range(tokens["requests"]))
    assert counted["shared"] == expected and 0 < expected < tokens["requests"]
    assert doc["environment"]["workload"]["shared_prefix"]["prompts_with_prefix"] == 32


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    pattern = rf"^{name}\{{[^}}]*model=\"synth-llm\"[^}}]*\}} (\S+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


@pytest.mark.parametrize("how", [["--cancel-after-tokens", "3"], ["--cancel-after-ms", "60"]])
def test_cancelled_requests_are_counted_apart_and_the_server_frees_them(server, tmp_path, how):
    failures_before = _metric(server.metrics_url, "nv_inference_request_failure")
    out = tmp_path / "cancel"
    run = tailmark(
        "run", "--target", "http://" + server.rest_address, "--transport", "openai", "--model", "synth-llm",
        "--scenario", "poisson", "--target-qps", "20", "--duration", "1", "--warmup", "0", "--min-queries", "16",
        "--input-tokens", "20", "--output-tokens", "40", "--ignore-eos", *how, "--cancel-share", "0.5",
        "--no-calibration", "--no-progress", "--out", str(out), timeout_s=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    assert doc["environment"]["workload"]["cancel"]["share"] == 0.5  # the settings are kept with the results
    total = scenario(doc, "poisson")["classes"]["all"]
    cancelled = total["cancelled_count"]
    assert total["error_count"] == 0 and total["errors"] == {}  # a cancel is not an error ...
    assert cancelled > 0 and total["ok_count"] > 0  # ... nor a success (a cut share of 0.5: some of each)
    assert total["tokens"]["requests"] == total["ok_count"]  # and adds no token timings
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices each disconnect, frees the slot, counts a failure
        running = _metric(server.metrics_url, "tailmark_llm_requests_running")
        failed = _metric(server.metrics_url, "nv_inference_request_failure") - failures_before
        if running == 0 and failed == cancelled:
            break
        time.sleep(0.1)
    assert (running, failed) == (0, cancelled)


@pytest.mark.parametrize("flag", [["--cancel-after-ms", "50"], ["--shared-prefix-tokens", "8"], ["--turns", "2"]])
def test_generative_workload_flags_need_the_openai_transport(tmp_path, flag):
    run = tailmark(
        "run", "--target", "127.0.0.1:1", "--transport", "grpc", "--model", "m", "--scenario", "concurrency", *flag,
        "--out", str(tmp_path / "x"), timeout_s=60,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    needs = "generative workloads and token timings need --transport openai or grpc-stream, not grpc"
    assert f"{flag[0]}: {needs}" in run.stderr
