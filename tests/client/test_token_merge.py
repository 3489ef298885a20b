"""Token timings survive ``tailmark merge``: each generative run writes tokens.json (client/token_store.py) and a
merge adds them bucket by bucket, so the merged TTFT/ITL histograms, goodput and LLM bounds are those of one
client that had sent every request."""

from __future__ import annotations

import json

import pytest

from support.repository import llm_config
from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.client import token_store
from tailmark.client.generation import Generation
from tailmark.client.token_metrics import TokenStats
from tailmark.server.default_repository import write_model


def _stats(first_ms: list[float], gap_ms: float) -> TokenStats:
    stats = TokenStats()
    for i, first in enumerate(first_ms):
        t0 = i * 1_000_000_000
        chunks = [t0 + round((first + k * gap_ms) * 1e6) for k in range(4)]
        generation = Generation(chunk_ns=chunks, text=[" tam"] * 4, output_tokens_reported=4, input_tokens=10)
        stats.record(t0, t0 + 100_000, chunks[-1], generation)
    return stats


def test_the_store_gives_back_what_was_recorded_and_sums_runs():
    a, b = _stats([10.0, 20.0, 30.0], 5.0), _stats([40.0], 7.0)
    back = token_store.from_dict(json.loads(json.dumps(token_store.to_dict({("server", "all"): a}))))
    restored = back["server", "all"]
    assert restored.requests == 3 and restored.output_tokens == 12 and restored.input_tokens == 30
    assert restored.times["ttft"].encode() == a.times["ttft"].encode()
    assert restored.good_count(ttft_ns=25_000_000) == a.good_count(ttft_ns=25_000_000) == 2
    total = token_store.merged_by_key([{("server", "all"): a}, None, {("server", "all"): b, ("server", "x"): b}])
    assert total["server", "all"].requests == 4 and total["server", "x"].requests == 1
    assert total["server", "all"].times["itl"].get_total_count() == 4 * 3  # three gaps an answer
    assert total["server", "all"].good_count(ttft_ns=35_000_000) == 3  # the rows of both runs are judged
    assert token_store.merged_by_key([None, None]) is None


@pytest.mark.parametrize(
    "document, message",
    [
        ({"format": "other"}, "not a tailmark-tokens-1"),
        ({"format": token_store.FORMAT, "series": [{}]}, r"series\[0\]: no 'scenario'"),
    ],
)
def test_a_damaged_store_is_refused_with_where(document, message):
    with pytest.raises(token_store.TokenStoreError, match=message):
        token_store.from_dict(document)


@pytest.fixture(scope="module")
def llm_target(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-llm")
    write_model(
        root,
        "llm",
        llm_config(prefill_base_ms=5.0, prefill_per_token_ms=0.0, decode_base_ms=2.0, decode_per_sequence_ms=0.0),
    )
    with ServerProcess(root, "--http-port", "0") as process:
        yield "http://" + process.rest_address


def test_merged_generative_runs_keep_their_token_timings(llm_target, tmp_path):
    runs = []
    for seed in (1, 2):
        out = tmp_path / f"run{seed}"
        run = tailmark(
            "run", "--target", llm_target, "--transport", "openai", "--model", "llm", "--scenario", "server",
            "--target-qps", "20", "--duration", "1", "--warmup", "0", "--min-queries", "5", "--seed", str(seed),
            "--input-tokens", "16", "--output-tokens", "4", "--ignore-eos", "--ttft-p99-ms", "5000",
            "--no-calibration", "--no-progress", "--out", str(out), timeout_s=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert (out / token_store.TOKENS_FILE).is_file()
        runs.append(scenario(results(out), "server")["classes"]["all"]["tokens"])
    merge = tailmark("merge", str(tmp_path / "run1"), str(tmp_path / "run2"), "-o", str(tmp_path / "m"))
    assert merge.returncode == 0, merge.stderr
    merged_doc = scenario(results(tmp_path / "m"), "server")
    tokens = merged_doc["classes"]["all"]["tokens"]
    assert tokens["requests"] == sum(r["requests"] for r in runs)
    assert tokens["output_tokens_total"] == sum(r["output_tokens_total"] for r in runs)
    ttft = tokens["latency_ms"]["ttft"]
    assert ttft["count"] == sum(r["latency_ms"]["ttft"]["count"] for r in runs)
    assert (
        min(r["latency_ms"]["ttft"]["max"] for r in runs)
        <= ttft["max"]
        == max(r["latency_ms"]["ttft"]["max"] for r in runs)
    )
    checks = {c["name"]: c for c in merged_doc["classes"]["all"]["verdict"]["checks"]}
    assert "ttft_bound" in checks, list(checks)  # judged again from the merged histogram
    assert (tmp_path / "m" / token_store.TOKENS_FILE).is_file()  # a merge of merges keeps them too
