"""``tailmark search``: the walk (bracket, bisect, confirm) with a fake step, the SLO parsing, the evidence rule
on synthetic histograms, and two real searches against a server whose capacity M/D/1 queueing predicts."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.repository import sleep_config
from support.runcli import tailmark
from support.serve import ServerProcess
from tailmark.client import hlog
from tailmark.client.intervals import percentile_interval
from tailmark.client.recorder import Recorder
from tailmark.client.report import console_table
from tailmark.client.results import load_results
from tailmark.client.search import Resolution, answer_text, parse_resolution, uncertainty, walk
from tailmark.client.slo import Objective, parse_duration_ms, parse_share, parse_slo
from tailmark.client.step_evidence import ObjectiveEvidence, StepOutcome, judge_objective, upper_tail
from tailmark.client.timeline import FILE_NAME, in_window, read_slices
from tailmark.server.default_repository import write_model

# --- the walk, with a fake endpoint whose answer is known ---


def fake(capacity: float, *, limited_at: float | None = None, flaky: set[float] | None = None):
    """A step function: passes below ``capacity``; blamed on the client at ``limited_at`` and above; the rates in
    ``flaky`` fail their first confirmation only."""
    calls: list[tuple[float, str, int]] = []

    def step(rate: float, phase: str, confirmation: int) -> StepOutcome:
        calls.append((rate, phase, confirmation))
        if limited_at is not None and rate >= limited_at:
            return StepOutcome(False, limited_by="client", why="client CPU 97 %")
        if flaky and rate in flaky and confirmation == 1:
            return StepOutcome(False)
        return StepOutcome(rate <= capacity)

    return step, calls


def test_the_walk_brackets_by_doubling_then_bisects_to_the_resolution_and_confirms():
    step, calls = fake(137.0)
    result = walk(step, start_qps=10.0, resolution=Resolution(relative=0.05))
    rates = [r for r, _, _ in calls]
    assert rates[:6] == [10, 20, 40, 80, 160, 320] or rates[:5] == [10, 20, 40, 80, 160]
    assert [p for _, p, _ in calls[:5]] == ["bracket"] * 5
    assert rates[4] == 160 and calls[5][1] == "bisect"  # 160 failed: the bracket is [80, 160]
    assert result.last_pass_qps <= 137.0 < result.first_fail_qps
    assert result.first_fail_qps - result.last_pass_qps <= 0.05 * result.last_pass_qps
    assert calls[-1] == (result.last_pass_qps, "confirm", 1) and result.confirmed and not result.stopped
    assert [w.number for w in result.steps] == list(range(1, len(calls) + 1))
    assert len(calls) == 5 + 4 + 1  # 80 -> 160 halved four times to 5 < 5 % of 130, then one confirmation
    # a fake step shows nothing by its interval, so nothing bounds the answer with 95 % on either side
    assert result.evidence_band_qps == (None, None) and uncertainty(result, 15.0) == (None, None)


def test_the_walk_halves_when_the_start_fails_and_takes_an_absolute_resolution():
    step, calls = fake(30.0)
    result = walk(step, start_qps=100.0, resolution=Resolution(absolute_qps=2.0))
    assert [r for r, _, _ in calls[:3]] == [100.0, 50.0, 25.0]
    assert result.last_pass_qps <= 30.0 < result.first_fail_qps <= result.last_pass_qps + 2.0
    assert result.confirmed


def test_the_walk_stops_when_the_client_is_the_limit():
    step, calls = fake(1000.0, limited_at=150.0)
    result = walk(step, start_qps=40.0, resolution=Resolution(relative=0.05))
    assert [r for r, _, _ in calls] == [40.0, 80.0, 160.0]
    assert result.last_pass_qps == 80.0 and result.first_fail_qps is None and not result.confirmed
    assert "the client, not the endpoint" in result.stopped and "client CPU 97 %" in result.stopped


def test_a_step_blamed_on_the_host_is_run_once_more():
    blamed: list[float] = []

    def step(rate: float, phase: str, confirmation: int) -> StepOutcome:
        if rate == 80.0 and not blamed:  # the host was noisy once
            blamed.append(rate)
            return StepOutcome(False, limited_by="host", why="probe woke late")
        if rate >= 160.0:  # and always at 160/s
            return StepOutcome(False, limited_by="host", why="probe woke late")
        return StepOutcome(True)

    result = walk(step, start_qps=40.0, resolution=Resolution(relative=0.05))
    assert [(w.rate_qps, w.phase) for w in result.steps] == [
        (40.0, "bracket"), (80.0, "bracket"), (80.0, "retry"), (160.0, "bracket"), (160.0, "retry"),
    ]  # fmt: skip
    assert result.last_pass_qps == 80.0 and "the host, not the endpoint" in result.stopped


def test_the_walk_caps_at_the_ceiling_and_says_so():
    step, _ = fake(1000.0)
    result = walk(step, start_qps=40.0, resolution=Resolution(relative=0.05), ceiling_qps=100.0)
    assert [w.rate_qps for w in result.steps] == [40.0, 80.0, 100.0, 100.0]
    assert result.last_pass_qps == 100.0 and result.confirmed and "calibrated ceiling" in result.stopped


def test_a_failed_confirmation_becomes_the_first_fail():
    step, calls = fake(100.0, flaky={100.0})
    result = walk(step, start_qps=25.0, resolution=Resolution(absolute_qps=10.0))
    confirms = [(r, c) for r, p, c in calls if p == "confirm"]
    assert confirms[0] == (100.0, 1) and len(confirms) == 2 and confirms[1][1] == 2  # fresh seeds the second time
    assert result.first_fail_qps == 100.0 and result.last_pass_qps < 100.0 and result.confirmed


def _shown(rate: float, capacity: float, shown: str) -> StepOutcome:
    evidence = ObjectiveEvidence(
        objective="p90<=50ms", trial_values=[1.0], trials_met=1, pooled_queries=500, pooled_within=450,
        worth_queries=100, correlation=5.0, pooled_value=1.0, interval_ms=[0.5, 2.0], p_value=0.5, shown=shown,
        passed=rate <= capacity, detail="",
    )  # fmt: skip
    return StepOutcome(rate <= capacity, objectives=[evidence])


def test_the_uncertainty_is_the_bracket_or_the_evidence_band_whichever_is_wider():
    shown = {40.0: "met", 80.0: "missed", 60.0: "undecided", 70.0: "undecided", 75.0: "undecided"}

    def step(rate: float, phase: str, confirmation: int) -> StepOutcome:
        return _shown(rate, 72.0, shown.get(rate, "undecided"))

    result = walk(step, start_qps=40.0, resolution=Resolution(relative=0.05))
    assert (result.last_pass_qps, result.first_fail_qps) == (70.0, 72.5)
    assert result.evidence_band_qps == (40.0, 80.0)
    assert uncertainty(result, 15.0) == (40.0, 80.0)  # wider than the bracket and its noise, 67.9..76.8
    shown[70.0] = "met"  # the answer itself shown met: the bracket's noise is the wider side below
    result = walk(step, start_qps=40.0, resolution=Resolution(relative=0.05))
    assert uncertainty(result, 15.0) == (pytest.approx(70.0 - 1.96 * math.sqrt(70.0 / 15.0)), 80.0)
    # nothing shown missed above the answer: the upper side is open, whatever the bracket says
    shown[80.0] = "undecided"
    result = walk(step, start_qps=40.0, resolution=Resolution(relative=0.05))
    assert result.evidence_band_qps == (70.0, None) and uncertainty(result, 15.0)[1] is None
    assert "uncertainty 65.8..?/s" in answer_text(result, 15.0)


def test_nothing_passes_and_the_step_limit():
    step, _ = fake(0.1)
    result = walk(step, start_qps=100.0, resolution=Resolution(relative=0.05))
    assert result.last_pass_qps is None and "no rate down to" in result.stopped
    step, _ = fake(1e9)
    result = walk(step, start_qps=1.0, resolution=Resolution(relative=0.05), max_steps=4)
    assert len(result.steps) == 4 and "--max-steps" in result.stopped and result.last_pass_qps == 8.0


# --- what is asked, parsed or refused in one line ---


def test_slo_specs():
    assert parse_slo("p99=50ms") == Objective(99.0, 50.0)
    assert parse_slo(" P99.9 <= 0.2s ") == Objective(99.9, 200.0)
    assert parse_slo("p50=10") == Objective(50.0, 10.0) and parse_slo("p90<500us").bound_ms == pytest.approx(0.5)
    for bad in ("99=50ms", "p100=5ms", "p0=5", "p99=0ms", "p99=50min", "p99", "p99=-1ms", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_slo(bad)
    assert parse_duration_ms("100ms") == 100.0 and parse_duration_ms("0.1s") == 100.0
    assert parse_share("0.99") == 0.99 and parse_share("99%") == pytest.approx(0.99)
    for bad in ("1", "0", "abc", "150%"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_share(bad)
    assert parse_resolution("5%") == Resolution(relative=0.05)
    assert parse_resolution("10/s") == Resolution(absolute_qps=10.0) == parse_resolution("10")
    for bad in ("0%", "100%", "-3", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_resolution(bad)


def test_search_refusals():
    run = tailmark("search", "--target", "127.0.0.1:1", "--model", "m")
    assert run.returncode == 2 and "needs an SLO" in run.stderr
    run = tailmark("search", "--target", "127.0.0.1:1", "--model", "m", "--slo", "p99=fast")
    assert run.returncode == 2 and "expected pPERCENTILE=BOUND" in run.stderr
    run = tailmark("search", "--target", "127.0.0.1:1", "--model", "m", "--goodput", "0.99")
    assert run.returncode == 2 and "go together" in run.stderr
    run = tailmark("search", "--target", "127.0.0.1:1", "--model", "m", "--slo", "p99=5ms", "--target-qps", "5")
    assert run.returncode == 2 and "--target-qps" in run.stderr


# --- the evidence rule, on histograms with known counts ---


def _hist(values_ms: list[float]):
    h = hlog.new_histogram()
    hlog.record_bulk([h], np.asarray([int(v * 1e6) for v in values_ms], dtype=np.int64))
    return h


def test_an_objective_is_shown_met_missed_or_left_to_the_trials():
    fast = [_hist([5.0] * 995 + [30.0] * 5) for _ in range(3)]  # p99 5 ms, 0.5 % at 30 ms
    met = judge_objective(Objective(99.0, 20.0), [(h, 0) for h in fast])
    assert met.shown == "met" and met.passed and met.pooled_queries == 3000 and met.interval_ms[1] <= 20.0
    missed = judge_objective(Objective(90.0, 20.0), [(_hist([5.0] * 80 + [30.0] * 20), 0) for _ in range(3)])
    assert missed.shown == "missed" and not missed.passed and missed.interval_ms[0] > 20.0
    # 100 queries cannot bound a p99 from above: the trials decide, unless --strict
    few = [(_hist([5.0] * 100), 0), (_hist([5.0] * 100), 0), (_hist([5.0] * 98 + [50.0] * 2), 0)]
    loose = judge_objective(Objective(99.0, 20.0), few)
    assert loose.shown == "undecided" and loose.trials_met == 2 and loose.passed
    assert not judge_objective(Objective(99.0, 20.0), few, strict=True).passed
    # goodput counts failures as misses: 990 of 1,000 within, 10 failed, against 0.98
    good = judge_objective(Objective(98.0, 20.0, goodput=True), [(_hist([5.0] * 990), 10)])
    assert good.pooled_queries == 1000 and good.pooled_value == pytest.approx(0.99) and good.shown == "met"
    assert good.p_value == pytest.approx(upper_tail(1000, 0.98, 990))
    assert judge_objective(Objective(99.7, 20.0, goodput=True), [(_hist([5.0] * 990), 10)]).shown == "missed"


def test_the_binomial_tail():
    assert upper_tail(10, 0.5, 0) == 1.0 and upper_tail(10, 0.5, 11) == 0.0
    assert upper_tail(10, 0.5, 10) == pytest.approx(0.5**10)
    assert upper_tail(4, 0.5, 2) == pytest.approx(11 / 16)


# --- real searches against a server of known capacity ---

SERVICE_MS = 10.0  # the sleep model's fixed service time: one instance, no batching, so one M/D/1 queue
SLO = (90.0, 50.0)  # p90 <= 50 ms (see the comment in the test for why p90, not p99)
STEP = ("--duration", "6", "--warmup", "0.5", "--min-queries", "20", "--no-progress", "--trials", "1")


def md1_wait_cdf(t: float, rho: float) -> float:
    """P(W <= t) for the M/D/1 queue's waiting time, t in units of the service time D, load rho = lambda D
    (Erlang, 1909; Crommelin, 1932): (1 - rho) sum_{k=0}^{floor t} (rho (k - t))^k / k! e^{-rho (k - t)}.
    The terms alternate in sign; for the t < 10 used here doubles hold them (checked against a simulation of
    2 million arrivals: the p99 at rho 0.45 and 0.6 agree to 0.2 %)."""
    return (1.0 - rho) * sum(
        (rho * (k - t)) ** k / math.factorial(k) * math.exp(-rho * (k - t)) for k in range(math.floor(t) + 1)
    )


def md1_highest_rate(percentile: float, bound_ms: float, service_ms: float, floor_ms: float) -> float:
    """The highest arrival rate (/s) whose response-time percentile W_p + D + floor stays within the bound."""

    def wait_quantile(rho: float) -> float:  # in units of D, by bisection on the cdf
        lo, hi = 0.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if md1_wait_cdf(mid, rho) >= percentile / 100 else (mid, hi)
        return hi

    lo, hi = 0.0, 0.999
    for _ in range(50):
        mid = (lo + hi) / 2
        fits = wait_quantile(mid) * service_ms + service_ms + floor_ms <= bound_ms
        lo, hi = (mid, hi) if fits else (lo, mid)
    return lo * 1000.0 / service_ms


@pytest.fixture(scope="module")
def queues(tmp_path_factory):
    """Two servers, each one M/D/1 queue, so the two searches run side by side (the sleep model takes no CPU and
    ~70 requests/s take little of the client's: the searches' walls, ~70 s each, do not add up)."""
    root = tmp_path_factory.mktemp("sleep-repo")
    write_model(root, "sleep", sleep_config(SERVICE_MS, instances=1))  # capacity 1 / 10 ms = 100/s
    with ServerProcess(root) as first, ServerProcess(root) as second:
        yield first, second


@pytest.fixture(scope="module")
def searches(queues, tmp_path_factory):
    """The loopback floor, then two searches with different seeds, at the same time on separate servers."""
    one_queue = queues[0]
    base = tmp_path_factory.mktemp("search")
    floor = tailmark(
        "run", "--target", one_queue.target, "--model", "sleep", "--scenario", "concurrency", "--concurrency", "1",
        "--duration", "1.5", "--warmup", "0.3", "--min-queries", "20", "--no-progress", "--no-calibration",
        "--out", str(base / "floor"),
    )  # fmt: skip
    assert floor.returncode in (0, 3), floor.stderr
    doc = json.loads((base / "floor" / "results.json").read_text())
    entry = doc["scenarios"][0]
    # what holds the instance: the server's own input + infer + output time (10 ms asked, ~10.2 ms measured);
    # the rest of one request's round trip is the loopback path, which does not queue
    mean_us = entry["server_stats"]["mean_us"]
    service_ms = (mean_us["compute_input"] + mean_us["compute_infer"] + mean_us["compute_output"]) / 1e3
    floor_ms = entry["classes"]["all"]["latency_ms"]["sent_to_done"]["p50"] - service_ms
    started = []
    for server, seed, start, resolution in ((queues[0], 11, 40, "5%"), (queues[1], 23, 50, "10%")):
        command = [
            sys.executable, "-m", "tailmark", "search", "--target", server.target, "--model", "sleep",
            "--slo", f"p{SLO[0]:g}={SLO[1]:g}ms", "--start-qps", str(start), "--resolution", resolution,
            "--seed", str(seed), *STEP, "--out", str(base / str(seed)),
        ]  # fmt: skip
        started.append((seed, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    out = []
    try:
        for seed, process in started:
            stdout, stderr = process.communicate(timeout=400)
            run = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            assert run.returncode == 0, run.stderr[-3000:]
            out.append((json.loads((base / str(seed) / "search.json").read_text()), run))
    finally:
        for _, process in started:
            process.kill()
            process.wait()
    return service_ms, floor_ms, out


def test_search_finds_the_md1_rate_for_the_slo(searches):
    """One instance serving exactly 10 ms is an M/D/1 queue: the response time is the wait W, the service D,
    and the loopback path's floor (measured: the p50 of sent -> done with one request in flight, less D). Only
    W queues. The SLO is p90 <= 50 ms (about 73/s, 73 % busy): on this shared 2-core box a 4 s step's p99 moved
    from 30 to 290 ms between trials at 30/s (other processes stalling the client), so the test asks for a
    percentile that a few stalls cannot move, where the latency curve is steep enough that the tail the host adds
    moves the answer little (at p90 <= 30 ms, about 57/s, the answers came 9 to 13 % low)."""
    service_ms, floor_ms, out = searches
    assert SERVICE_MS <= service_ms <= 1.1 * SERVICE_MS and 0.0 <= floor_ms <= 5.0, (service_ms, floor_ms)
    expected = md1_highest_rate(*SLO, service_ms, floor_ms)
    assert 65.0 <= expected <= 80.0, expected
    doc, run = out[0]
    if doc["stopped"] and "not the endpoint, limited" in doc["stopped"]:  # the tool says this host cannot judge
        pytest.skip(f"the search stopped on host or client noise: {doc['stopped']}")
    answer = doc["answer_qps"]
    # a step judges the rate its Poisson schedule happened to offer, 95 % within 1.96 sqrt(r / s) of the asked
    # rate (client/search.py uncertainty), and the walk stops one resolution (5 %) short: together the answer's
    # stated error. Measured once here: 80/s against the analytic 72.4/s, inside 80 +- (7.6 + 4.0)
    measured_s = float(STEP[1]) - float(STEP[3])
    tolerance = 1.96 * math.sqrt(answer / measured_s) + 0.05 * answer
    assert abs(answer - expected) <= tolerance, (answer, expected, tolerance, doc["bracket_qps"])
    assert doc["step_count"] == len(doc["steps"]) and doc["wall_s"] > 0
    low, high = doc["bracket_qps"]
    assert low == answer and high > low
    if doc["stopped"] is None:  # a confirmation that fails twice ends the walk with a wider bracket, and says so
        assert doc["confirmed"] and (high - low) <= 0.05 * low
        # the confirmation ran at the answer (a host-blamed step may be followed by its one retry)
        assert any(step["phase"] == "confirm" and step["rate_qps"] == answer for step in doc["steps"][-2:])
    for step in doc["steps"]:  # every step recorded with its evidence and its run directory
        evidence = step["objectives"][0]
        assert evidence["objective"] == "p90<=50ms" and evidence["shown"] in ("met", "missed", "undecided")
        assert len(evidence["trial_values"]) == 1 and step["trials"] == 1 and step["run_dir"].startswith("step-")
    assert "answer:" in run.stdout and "uncertainty" in run.stdout and "p90<=50ms" in run.stdout
    print(f"search: answer {answer:g}/s, M/D/1 {expected:.1f}/s (D {service_ms:.2f} ms, floor {floor_ms:.2f} ms), "
          f"{doc['step_count']} steps in {doc['wall_s']} s")  # fmt: skip


def test_two_seeds_agree_within_the_stated_uncertainty(searches):
    *_, out = searches
    (a, _), (b, _) = out
    assert a["settings"]["schedule_seed"] != b["settings"]["schedule_seed"]
    for doc in (a, b):
        if doc["stopped"] and "not the endpoint, limited" in doc["stopped"]:  # the tool says this host cannot judge
            pytest.skip(f"a search stopped on host or client noise: {doc['stopped']}")
    # the stated uncertainty: the bracket [last pass, first fail] widened by the 95 % range of the rate a Poisson
    # schedule offers in one step (measured here: a 5 s step at 56/s offered 48.8/s, another at 53/s 57.8/s), or
    # the evidence band where wider: one trial's luck passed 81.25/s in one search and failed 75/s in the other
    # (CI, 2026-12-06), which the bracket alone did not cover
    service_ms, floor_ms, _ = searches
    expected = md1_highest_rate(*SLO, service_ms, floor_ms)
    for doc, other in ((a, b), (b, a)):
        low, high = doc["uncertainty_qps"]
        assert (low or 0.0) <= other["answer_qps"] <= (high or math.inf), (doc["uncertainty_qps"], other["answer_qps"])
        assert (low or 0.0) <= expected <= (high or math.inf), (doc["uncertainty_qps"], expected)  # and the truth
        assert low is not None and low <= doc["answer_qps"]  # the lowest steps (40/s, 50/s) show the SLO met
        for step in doc["steps"]:  # every step's evidence says what its correlated requests were worth
            evidence = step["objectives"][0]
            assert 0 < evidence["worth_queries"] <= evidence["pooled_queries"] and evidence["correlation"] >= 1.0
    print(f"search walls: {a['wall_s']} s / {b['wall_s']} s, steps {a['step_count']} / {b['step_count']}; "
          f"uncertainty {a['uncertainty_qps']} / {b['uncertainty_qps']}")  # fmt: skip


def test_a_steps_report_leaves_its_plots_to_tailmark_report(searches, tmp_path):
    *_, out = searches
    doc, run = out[1]
    step_dir = Path(run.args[run.args.index("--out") + 1]) / doc["steps"][0]["run_dir"]  # relative to search.json
    page = (step_dir / "report.html").read_text()
    assert "tailmark report DIR" in page and "<img" not in page  # tables only: a step's plots cost seconds
    redraw = tailmark("report", str(step_dir))
    assert redraw.returncode == 0, redraw.stderr
    assert "<img" in (step_dir / "report.html").read_text()


def test_a_steps_intervals_carry_the_correlation_of_its_seconds(searches, tmp_path):
    """A run near the queue's capacity (the search step nearest 80/s, 80 % busy): each percentile's interval in
    results.json is widened by the inflation its one-second batches showed, and says by how much; the
    independent interval of the same histogram is narrower; the console names the factor; a merge, which keeps
    no seconds, says its intervals assume independence."""
    *_, out = searches
    doc, run = out[0]
    step = min(doc["steps"], key=lambda s: abs(s["rate_qps"] - 80.0))
    step_dir = Path(run.args[run.args.index("--out") + 1]) / step["run_dir"]
    results = load_results(step_dir / "results.json")
    # the batches: the log's whole seconds inside the window, holding about the window's requests in proportion
    entry = results["scenarios"][0]
    window = entry["evidence"]["window_in_log_s"]
    seconds = in_window(read_slices(step_dir / FILE_NAME, scenario=entry["scenario"])[entry["scenario"]], window)
    assert 4 <= len(seconds) <= window[1] - window[0] and all(s.length_s >= 1.0 for s in seconds)
    held, ok = sum(s.count for s in seconds), entry["classes"]["all"]["ok_count"]
    assert 0.5 * ok * len(seconds) / (window[1] - window[0]) <= held <= ok, (held, ok, len(seconds))
    recorder = Recorder.from_dict(json.loads((step_dir / "histograms.json").read_text()))
    total = results["scenarios"][0]["classes"]["all"]
    whole = recorder.histogram((results["scenarios"][0]["scenario"], "all"), "intended_to_done")
    intervals = total["intervals"]
    factors = intervals["correlation"]["intended_to_done"]
    assert all(f >= 1.0 for f in factors.values()) and max(factors["p50"], factors["p90"]) > 2.0, factors
    for key, percentile in (("p50", 50.0), ("p90", 90.0)):
        lo, hi = intervals["latency_ms"]["intended_to_done"][key]
        alone_lo, alone_hi = percentile_interval(whole, percentile)
        assert lo * 1e6 <= alone_lo * (1 + 1e-6) and (hi is None or hi * 1e6 >= alone_hi * (1 - 1e-6))
        if factors[key] > 2.0:  # wider on at least one side
            assert (hi is None or hi * 1e6 > alone_hi) or lo * 1e6 < alone_lo, (key, lo, hi, alone_lo, alone_hi)
    p99_factor = factors["p99"]
    assert (f"(x{p99_factor:g} for correlation)" in console_table(results)) == (p99_factor > 1.0)
    merged = tailmark("merge", str(step_dir), "--output", str(tmp_path / "merged"))
    assert merged.returncode in (0, 3), merged.stderr
    merged_doc = load_results(tmp_path / "merged" / "results.json")
    assert merged_doc["scenarios"][0]["classes"]["all"]["intervals"]["correlation"] is None
