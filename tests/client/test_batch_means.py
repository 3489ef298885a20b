"""Batch means: Student's t, the variance inflation from batches, and what it does to a search step's evidence
on a simulated M/D/1 queue, whose latencies are correlated the way a real queue's are."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from support.repository import sleep_config
from support.runcli import tailmark
from support.serve import ServerProcess
from tailmark.client import hlog
from tailmark.client.batch_means import share_inflation, t_quantile
from tailmark.client.intervals import percentile_interval
from tailmark.client.recorder import Recorder
from tailmark.client.results import load_results
from tailmark.client.slo import Objective
from tailmark.client.step_evidence import judge_objective
from tailmark.server.default_repository import write_model


def test_t_quantiles():
    # exact closed forms for 1 and 2 degrees of freedom; tables (e.g. NIST's) for the rest
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    for df, table in ((3, 3.1824), (4, 2.7764), (5, 2.5706), (10, 2.2281), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(table, rel=2e-3)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12) and t_quantile(0.025, 9) == -t_quantile(0.975, 9)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_the_inflation_from_how_batches_scatter():
    rng = np.random.default_rng(5)
    # independent requests: the batches scatter as the binomial says, so the factor is about (t / z)^2 alone
    independent = [(1000, int(rng.binomial(1000, 0.9))) for _ in range(40)]
    mild = share_inflation(independent)
    assert mild.batches == 40 and 1.0 <= mild.factor < 2.0
    # a queue's good and bad seconds: the share swings far beyond binomial noise
    swinging = [(100, 99), (100, 70), (100, 98), (100, 60), (100, 97), (100, 95)]
    strong = share_inflation(swinging)
    share = sum(k for _, k in swinging) / 600
    scatter = np.var([k / 100 for _, k in swinging], ddof=1) / 6
    widen = (t_quantile(0.975, 5) / 1.959964) ** 2
    assert strong.factor == pytest.approx(scatter / (share * (1 - share) / 600) * widen, rel=1e-6)
    assert strong.factor > 20 and strong.effective(600) == math.floor(600 / strong.factor)
    assert share_inflation([(100, 90)]) is None and share_inflation([(0, 0), (50, 45)]) is None  # one batch held
    assert share_inflation([(100, 100), (80, 80)]).factor == 1.0  # no misses anywhere: nothing scatters


SERVICE_MS, FLOOR_MS = 10.0, 1.0


def md1_trial(rng: np.random.Generator, rate: float, warmup_s: float = 0.5, measured_s: float = 5.5):
    """One trial against one 10 ms instance, starting empty: each measured second's histogram (by completion,
    as the interval log has them) and the trial's whole histogram."""
    span_ms = (warmup_s + measured_s) * 1000
    arrivals = np.cumsum(rng.exponential(1000 / rate, int(rate * span_ms / 1000 * 1.5) + 50))
    arrivals = arrivals[arrivals < span_ms]
    wait = np.zeros(len(arrivals))
    for i in range(1, len(arrivals)):  # Lindley: each request waits for the one before it
        wait[i] = max(0.0, wait[i - 1] + SERVICE_MS - (arrivals[i] - arrivals[i - 1]))
    latency = wait + SERVICE_MS + FLOOR_MS
    kept = arrivals >= warmup_s * 1000
    done_s = (arrivals[kept] + latency[kept]) / 1000 - warmup_s
    values = (latency[kept] * 1e6).astype(np.int64)
    whole = hlog.new_histogram()
    hlog.record_bulk([whole], values)
    seconds = []
    for second in range(int(measured_s)):  # whole seconds inside the window
        histogram = hlog.new_histogram()
        hlog.record_bulk([histogram], values[(done_s >= second) & (done_s < second + 1)])
        seconds.append(histogram)
    return seconds, whole


def shown_met_share(rate: float, trials: int, repeats: int, *, with_batches: bool) -> float:
    rng = np.random.default_rng(20261206)
    objective = Objective(90.0, 50.0)
    shown = 0
    for _ in range(repeats):
        runs = [md1_trial(rng, rate) for _ in range(trials)]
        batches = [h for seconds, _ in runs for h in seconds] if with_batches else None
        evidence = judge_objective(objective, [(whole, 0) for _, whole in runs], batches=batches)
        shown += evidence.shown == "met"
    return shown / repeats


def test_correlated_latencies_no_longer_show_a_missed_slo_met():
    """At 80/s the queue's p90 is 61 ms (a 3,000 s simulation), so p90 <= 50 ms is missed and may be shown met
    in at most 2.5 % of steps. Counting the requests as independent shows it met in 4 % of 3-trial steps (and
    15 % of 1-trial ones); the batches' scatter brings that under 2.5 % (none of 300; 1.3 % with one trial),
    while a rate that meets it (50/s) is still shown met (39 of 40)."""
    independent = shown_met_share(80.0, 3, 300, with_batches=False)
    corrected = shown_met_share(80.0, 3, 300, with_batches=True)
    assert independent > 0.025 and corrected <= 0.025, (independent, corrected)
    assert shown_met_share(50.0, 3, 40, with_batches=True) >= 0.9


def test_a_runs_intervals_carry_the_correlation_of_its_seconds(tmp_path):
    """A real run against one 10 ms instance at 80 % load: each percentile's interval in results.json is widened
    by the inflation its one-second batches showed, and says by how much; the independent interval, computed
    from the same histogram, is narrower."""
    write_model(tmp_path / "repo", "sleep", sleep_config(SERVICE_MS, instances=1))
    with ServerProcess(tmp_path / "repo") as server:
        run = tailmark(
            "run", "--target", server.target, "--model", "sleep", "--scenario", "server", "--target-qps", "80",
            "--duration", "8", "--warmup", "1", "--min-queries", "20", "--no-progress", "--no-calibration",
            "--out", str(tmp_path / "run"),
        )  # fmt: skip
    assert run.returncode in (0, 3), run.stderr
    doc = load_results(tmp_path / "run" / "results.json")
    classes = doc["scenarios"][0]["classes"]
    recorder = Recorder.from_dict(json.loads((tmp_path / "run" / "histograms.json").read_text()))
    whole = recorder.histogram(("server", "all"), "intended_to_done")
    for name in ("default", "all"):
        intervals = classes[name]["intervals"]
        factors = intervals["correlation"]["intended_to_done"]
        assert all(f >= 1.0 for f in factors.values()) and max(factors["p50"], factors["p90"]) > 2.0, factors
        for key, percentile in (("p50", 50.0), ("p90", 90.0)):
            lo, hi = intervals["latency_ms"]["intended_to_done"][key]
            alone_lo, alone_hi = percentile_interval(whole, percentile)
            assert lo * 1e6 <= alone_lo * (1 + 1e-6) and (hi is None or hi * 1e6 >= alone_hi * (1 - 1e-6))
            if factors[key] > 2.0:  # wider on at least one side
                assert (hi is None or hi * 1e6 > alone_hi) or lo * 1e6 < alone_lo, (key, lo, hi, alone_lo, alone_hi)
    p99_factor = classes["all"]["intervals"]["correlation"]["intended_to_done"]["p99"]
    assert (f"(x{p99_factor:g} for correlation)" in run.stdout) == (p99_factor > 1.0), run.stdout  # the console
    # a merge knows no seconds: its intervals say they assume independence
    merged = tailmark("merge", str(tmp_path / "run"), str(tmp_path / "run"), "--output", str(tmp_path / "merged"))
    assert merged.returncode in (0, 3), merged.stderr
    merged_doc = load_results(tmp_path / "merged" / "results.json")
    assert merged_doc["scenarios"][0]["classes"]["all"]["intervals"]["correlation"] is None
