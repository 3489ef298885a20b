"""``tailmark run --repeat K`` against a real server: K runs with fresh seeds, each kept, and the summary."""

from __future__ import annotations

import statistics

import pytest

from support.runcli import results, tailmark
from tailmark.client.repeat import repeat_plan, spread, stability, summarize
from tailmark.client.results import load_results
from tailmark.client.settings import Scenario, ScenarioSettings, resolve


def test_repeat_plan_gives_each_repeat_fresh_seeds() -> None:
    server = resolve(
        ScenarioSettings(scenario=Scenario.SERVER, target_qps=10, schedule_seed=7, sample_seed=9), mlperf=False
    )
    offline = resolve(ScenarioSettings(scenario=Scenario.OFFLINE, target_qps=10), mlperf=False)
    plan = repeat_plan([server, offline], 3)
    assert [s.scenario for s in plan] == [Scenario.SERVER, Scenario.OFFLINE] * 3
    assert [s.schedule_seed for s in plan[::2]] == [7, 8, 9] and [s.sample_seed for s in plan[::2]] == [9, 10, 11]
    assert plan[0] == server  # repeat 1 is the run without --repeat
    assert len({(s.schedule_seed, s.sample_seed) for s in plan[1::2]}) == 3
    with pytest.raises(ValueError):
        repeat_plan([server], 0)


def test_spread_is_median_min_max_of_known_values() -> None:
    assert spread([3.0, None, 1.0, 10.0]) == {"median": 3.0, "min": 1.0, "max": 10.0}
    assert spread([None]) == {"median": None, "min": None, "max": None}


def test_run_repeat_keeps_every_repeat_and_summarizes(tmp_path, server) -> None:
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--scenario", "poisson", "--scenario",
        "fixed-interval", "--target-qps", "100", "--duration", "1", "--warmup", "0", "--min-queries", "20",
        "--seed", "5", "--repeat", "3", "--out", str(out), "--no-progress", "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    assert doc["complete"] is True
    assert [(s["scenario"], s["repeat"]) for s in doc["scenarios"]] == [
        ("poisson", 1), ("fixed-interval", 1), ("poisson", 2), ("fixed-interval", 2), ("poisson", 3),
        ("fixed-interval", 3),
    ]  # fmt: skip
    seeds = [s["settings"]["effective"]["schedule_seed"] for s in doc["scenarios"][::2]]
    assert seeds == [5, 6, 7]
    repeats = doc["repeats"]
    assert repeats["count"] == 3 and repeats["scenarios_per_repeat"] == 2
    poisson = repeats["summary"][0]
    assert poisson["scenario"] == "poisson" and poisson["repeats"] == 3
    assert poisson["valid"] == sum(s["result"] == "VALID" for s in doc["scenarios"][::2])
    assert [pair[0] for pair in poisson["seeds"]] == [5, 6, 7]
    p99s = [s["classes"]["all"]["latency_ms"]["intended_to_done"]["p99"] for s in doc["scenarios"][::2]]
    assert poisson["latency_ms"]["p99"] == {"median": statistics.median(p99s), "min": min(p99s), "max": max(p99s)}
    rates = [s["classes"]["all"]["achieved_rate_qps"] for s in doc["scenarios"][::2]]
    assert poisson["throughput_qps"]["median"] == statistics.median(rates)
    # the Poisson schedule differs between repeats (fresh seeds); the fixed interval does not depend on one
    counts = [s["classes"]["all"]["query_count"] for s in doc["scenarios"][::2]]
    assert len(set(counts)) > 1, counts
    # the console and `tailmark report` show each repeat and the summary
    for text in (run.stdout, tailmark("report", str(out)).stdout):
        assert "poisson#3" in text and "fixed-interval#2" in text
        assert "over 3 repeats: median (min..max)" in text and "poisson: " in text
    assert load_results(out / "results.json")["repeats"] == repeats  # the schema validates it
    assert poisson["stability"]["stable"] in (True, False) and poisson["stability"]["last"] == 3
    assert poisson["stability"]["detail"] in run.stdout


def test_summary_counts_a_partial_repeat() -> None:
    """An interrupted run: the second repeat ran only its first scenario."""

    def scenario(name: str, p99: float, result: str) -> dict:
        latency = {k: p99 for k in ("p50", "p90", "p95", "p97", "p99", "p99_9")}
        total = {"achieved_rate_qps": 10.0, "latency_ms": {"intended_to_done": latency}}
        settings = {"effective": {"schedule_seed": 1, "sample_seed": 2}}
        return {"scenario": name, "result": result, "classes": {"all": total}, "settings": settings}

    docs = [scenario("server", 1.0, "VALID"), scenario("offline", 5.0, "VALID"), scenario("server", 3.0, "INVALID")]
    summary = summarize(docs, count=2, scenarios_per_repeat=2)["summary"]  # type: ignore[arg-type]
    assert [(e["scenario"], e["repeats"], e["valid"]) for e in summary] == [("server", 2, 1), ("offline", 1, 1)]
    assert summary[0]["latency_ms"]["p99"] == {"median": 2.0, "min": 1.0, "max": 3.0}


def test_repeat_refuses_nonsense(tmp_path, server) -> None:
    bad = tailmark("run", "--target", server.target, "--model", "identity", "--repeat", "0", "--out", str(tmp_path))
    assert bad.returncode == 2 and "--repeat 0: must be >= 1" in bad.stderr and "Traceback" not in bad.stderr


def test_stability_is_perf_analyzers_rule_over_the_last_repeats() -> None:
    """Each of the last 3 values of rate and p99 within 10 % of their mean; earlier repeats do not count."""
    steady = stability([50.0, 100.0, 104.0, 97.0], [9.0, 2.0, 2.1, 2.05])  # only the last 3 count
    assert steady["stable"] is True and steady["detail"].startswith("stable:")
    jumpy = stability([100.0, 100.0, 100.0], [2.0, 2.0, 2.6])  # max/min 1.3
    assert jumpy["stable"] is False and "p99 2..2.6 ms" in jumpy["detail"]
    # each within 5 % of their mean, but max/min 1.105: perf_analyzer's rule is max/min, not distance to the mean
    assert stability([100.0, 100.0, 100.0], [1.9, 2.0, 2.1])["stable"] is False
    assert stability([100.0, 130.0, 100.0], [2.0, 2.0, 2.0])["stable"] is False
    assert stability([100.0, 100.0], [2.0, 2.0])["stable"] is None  # too few repeats to judge
    assert stability([100.0] * 3, [None, 2.0, 2.0])["stable"] is False  # a repeat without a p99 is not stable
