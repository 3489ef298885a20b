"""Token metrics on synthetic evidence (known stamps), the TTFT/TPOT verdicts, goodput, and a whole
``tailmark run --transport openai`` against a local SSE server with known timings."""

from __future__ import annotations

import csv

import pytest

from support.runcli import results, scenario, tailmark
from support.sse_server import Behaviour, SseServer
from tailmark.client import hlog
from tailmark.client.generation import Generation
from tailmark.client.results import ClassResult, ScenarioResult
from tailmark.client.settings import Scenario, ScenarioSettings, resolve
from tailmark.client.token_metrics import TokenRecorder, TokenStats, merged, tokens_doc
from tailmark.client.token_verdict import PRESETS, token_checks, with_token_checks
from tailmark.client.verdict import Verdict

MS = 1_000_000


def generation(first_ms: float, gap_ms: float, tokens: int, *, usage: bool = True) -> Generation:
    """An answer whose first chunk came ``first_ms`` after 0 and every later one ``gap_ms`` after the last."""
    stamps = [round((first_ms + i * gap_ms) * MS) for i in range(tokens)]
    g = Generation(chunk_ns=stamps, text=[f" t{i}" for i in range(tokens)])
    if usage:
        g.output_tokens_reported, g.input_tokens = tokens, 100
    else:
        g.input_tokens_counted = 7
    return g


def stats_of(*requests: tuple[float, float, float, int]) -> TokenStats:
    """(send lag ms, first token ms after intended, gap ms, tokens) per request; done = last chunk + 1 ms."""
    stats = TokenStats()
    for lag, first, gap, tokens in requests:
        g = generation(first, gap, tokens)
        stats.record(0, round(lag * MS), g.chunk_ns[-1] + MS, g)
    stats.flush()
    return stats


def test_ttft_from_intended_and_from_sent_tpot_itl_and_ttst():
    stats = stats_of((5, 50, 10, 11), (0, 20, 30, 3))
    ttft, sent = stats.histogram("ttft"), stats.histogram("ttft_sent")
    assert ttft.get_max_value() == pytest.approx(50 * MS, rel=1e-3)
    assert sent.get_max_value() == pytest.approx(45 * MS, rel=1e-3)  # the 5 ms of client queueing left out
    tpot = stats.histogram("tpot")  # (last - first) / (tokens - 1): 10 ms and 30 ms
    assert tpot.get_min_value() == pytest.approx(10 * MS, rel=1e-3) and tpot.get_max_value() == pytest.approx(
        30 * MS, rel=1e-3
    )
    assert stats.histogram("itl").get_total_count() == 10 + 2  # every gap, all requests together
    assert stats.histogram("ttst").get_total_count() == 2
    assert stats.output_tokens == 14 and stats.input_tokens == 200 and stats.output_source == {"usage": 2}


def test_answers_without_text_or_with_one_chunk_are_counted_not_timed():
    stats = TokenStats()
    stats.record(0, 0, 5 * MS, Generation())  # no text at all
    one = generation(3, 0, 1)
    stats.record(0, 0, 4 * MS, one)
    stats.flush()
    assert stats.requests == 2 and stats.without_text == 1
    assert stats.histogram("ttft").get_total_count() == 1 and stats.histogram("itl").get_total_count() == 0
    assert stats.histogram("tpot").get_total_count() == 0


def test_counted_tokens_say_so():
    stats = TokenStats()
    stats.record(0, 0, 10 * MS, generation(1, 1, 4, usage=False))
    assert stats.output_source == {"counted": 1} and stats.input_source == {"counted": 1}
    assert stats.input_tokens == 7 and stats.output_tokens == 4


def test_goodput_counts_requests_meeting_every_slo_and_failures_as_misses():
    stats = stats_of((0, 50, 10, 11), (0, 200, 10, 11), (0, 50, 40, 11), (0, 50, 10, 1))
    assert stats.good_count(ttft_ns=100 * MS) == 3
    assert stats.good_count(ttft_ns=100 * MS, tpot_ns=20 * MS) == 2  # the one-token answer has no TPOT: meets it
    assert stats.good_count(e2e_ns=200 * MS) == 2  # 50 + 10 x 10 + 1 = 151 ms and the one-token answer
    doc = tokens_doc(stats, duration_s=2.0, failed=1, slos_ms={"ttft": 100.0, "tpot": 20.0, "e2e": 0.0})
    assert doc["goodput"] == {"slo_ms": {"ttft": 100.0, "tpot": 20.0}, "good_count": 2, "query_count": 5,
                              "share": 0.4, "rate_per_s": 1.0}  # fmt: skip
    assert doc["output_tokens_per_s"] == pytest.approx(34 / 2.0)


def test_merged_stats_add_up():
    a, b = stats_of((0, 10, 5, 3)), stats_of((0, 30, 5, 5), (0, 40, 5, 2))
    total = merged([a, b])
    assert total.requests == 3 and total.output_tokens == 10
    assert total.histogram("itl").get_total_count() == 2 + 4 + 1
    assert total.good_count(ttft_ns=35 * MS) == 2


def settings(**values):
    return resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=10, **values), mlperf=False)


def test_token_bounds_replace_the_server_default_bound_and_presets_hold_mlperf_pairs():
    assert settings().latency_bound_ms == 10.0
    s = settings(ttft_bound_ms=450.0, tpot_bound_ms=40.0)
    assert s.latency_bound_ms == 0.0 and (s.ttft_bound_ms, s.tpot_bound_ms) == PRESETS["llama2-70b-interactive"]


def test_ttft_and_tpot_bounds_judged_at_p99_with_early_stopping():
    fast = [(0, 40, 10, 5)] * 600
    stats = stats_of(*fast)
    passed = token_checks(settings(ttft_bound_ms=50.0, tpot_bound_ms=20.0), stats, failed=0)
    assert [c.name for c in passed] == ["ttft_bound", "tpot_bound"] and all(c.passed for c in passed)
    slow_first = stats_of(*fast[:590], *[(0, 80, 10, 5)] * 10)  # 10 of 600 over: p99 over the bound
    ttft, tpot = token_checks(settings(ttft_bound_ms=50.0, tpot_bound_ms=20.0), slow_first, failed=0)
    assert not ttft.passed and "TTFT p99 80" in ttft.detail and tpot.passed
    # too few requests for the percentile to be shown under the bound: early stopping fails it
    few = token_checks(settings(ttft_bound_ms=50.0), stats_of(*fast[:100]), failed=0)[0]
    assert not few.passed and "needs >=" in few.detail
    # failures count as over the bound
    failing = token_checks(settings(ttft_bound_ms=50.0), stats, failed=30)[0]
    assert not failing.passed


def test_without_token_timings_the_bounds_are_not_judged_and_a_note_says_so():
    s = settings(ttft_bound_ms=50.0)
    verdict = with_token_checks(Verdict(checks=()), s, None, failed=0)
    assert verdict.checks == () and "not judged" in verdict.notes[0]
    assert with_token_checks(Verdict(checks=()), settings(), None, failed=0).notes == ()


def test_a_scenario_result_carries_the_token_doc_and_checks():
    stats = stats_of(*[(0, 40, 10, 5)] * 600)
    empty = hlog.new_histogram()
    latency = hlog.new_histogram()
    latency.record_value(100 * MS)
    c = ClassResult("default", latency, latency, empty, tokens=stats)
    s = settings(ttft_bound_ms=30.0, slo_ttft_ms=50.0)
    result = ScenarioResult(settings=s, classes={"default": c}, duration_s=10.0)
    doc = result.to_dict()
    tokens = doc["classes"]["all"]["tokens"]
    assert tokens["requests"] == 600 and tokens["goodput"]["good_count"] == 600
    assert tokens["latency_ms"]["ttft"]["p99"] == pytest.approx(40.0, rel=1e-3)
    checks = {c["name"]: c for c in doc["classes"]["all"]["verdict"]["checks"]}
    assert not checks["ttft_bound"]["passed"] and doc["classes"]["all"]["verdict"]["cause"] == "endpoint"


def test_the_recorder_ignores_answers_that_are_not_generations():
    recorder = TokenRecorder()
    recorder.record(("server", "default"), 0, 0, 1, b"bytes")
    assert recorder.stats(("server", "default")) is None


# --- a whole run over HTTP ---


def test_run_over_openai_transport_measures_ttft_and_itl_as_served(tmp_path):
    """A 2 s Server run at 20/s against 30 ms to the first token and 8 ms between tokens (6 tokens)."""
    out = tmp_path / "run"
    with SseServer(Behaviour(tokens=6, ttft_ms=30, gap_ms=8)) as server:
        run = tailmark(
            "run", "--target", server.url, "--transport", "openai", "--model", "synth-test", "--scenario", "server",
            "--target-qps", "20", "--duration", "2", "--warmup", "0.3", "--min-queries", "10", "--output-tokens", "6",
            "--input-tokens", "32", "--ttft-p99-ms", "500", "--tpot-p99-ms", "100", "--slo-ttft-ms", "500",
            "--no-calibration", "--no-progress", "--out", str(out), timeout_s=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert server.behaviour.last_body["max_tokens"] == 6
    doc = results(out)
    everything = scenario(doc, "server")["classes"]["all"]
    assert everything["error_count"] == 0
    tokens = everything["tokens"]
    ttft, itl = tokens["latency_ms"]["ttft"], tokens["latency_ms"]["itl"]
    assert 29 <= ttft["p50"] < 80, ttft  # written 30 ms after the request arrived
    assert 7 <= itl["p50"] < 30, itl
    assert tokens["output_tokens"]["p50"] == 6 and tokens["token_source"]["output"] == {"usage": tokens["requests"]}
    assert tokens["goodput"]["slo_ms"] == {"ttft": 500.0}
    assert doc["environment"]["workload"]["input_tokens"] == 32
    names = [c["name"] for c in everything["verdict"]["checks"]]
    assert "ttft_bound" in names and "tpot_bound" in names and "latency_bound" not in names
    assert "TTFT" in run.stdout + run.stderr  # the console's token table
    with (out / "summary.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["traffic_class"] == "all")
    assert float(row["ttft_p50_ms"]) == ttft["p50"] and row["token_source"] == "usage"
    assert "<h3>Token latencies</h3>" in (out / "report.html").read_text()


def test_an_llm_trace_sets_each_requests_input_and_output_tokens(tmp_path):
    from tailmark.traces.format import Record
    from tailmark.traces.writer import write_trace

    rows = [Record(i * 30 * MS, input_tokens=40 + 10 * (i % 3), output_tokens=2 + i % 4) for i in range(24)]
    write_trace(tmp_path / "llm.jsonl", rows)
    out = tmp_path / "run"
    with SseServer(Behaviour(tokens=50, ttft_ms=2, gap_ms=1)) as server:
        run = tailmark(
            "run", "--target", server.url, "--transport", "openai", "--model", "synth-test", "--scenario", "trace",
            "--trace", str(tmp_path / "llm.jsonl"), "--duration", "0.5", "--warmup", "0", "--no-calibration",
            "--no-progress", "--out", str(out), timeout_s=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    tokens = scenario(results(out), "trace")["classes"]["all"]["tokens"]
    assert tokens["requests"] == 24
    assert tokens["output_tokens_total"] == sum(r.output_tokens for r in rows)  # each request's max_tokens
    assert tokens["output_tokens"]["min"] == 2 and tokens["output_tokens"]["max"] == 5


def test_bad_generative_flags_are_one_clear_error(tmp_path):
    with SseServer(Behaviour()) as server:
        run = tailmark("run", "--target", server.url, "--transport", "openai", "--model", "synth-test",
                       "--input-tokens", "0", "--no-progress", "--out", str(tmp_path / "x"))  # fmt: skip
        unknown = tailmark("run", "--target", server.url, "--transport", "openai", "--model", "nope",
                           "--no-progress", "--out", str(tmp_path / "y"))  # fmt: skip
    assert run.returncode != 0 and run.stderr.strip().splitlines()[-1].endswith("--input-tokens 0: must be >= 1")
    assert unknown.returncode != 0 and "does not serve model 'nope'" in unknown.stderr
    h2 = tailmark("run", "--target", "127.0.0.1:9", "--model", "m", "--llm-preset", "llama2-70b", "--no-progress")
    assert h2.returncode == 2 and "token timings need --transport openai or grpc-stream, not h2" in h2.stderr
    assert not (tmp_path / "x").exists()
