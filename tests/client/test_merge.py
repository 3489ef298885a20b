"""`tailmark merge`: runs of different processes merged equal one run of all their values, judged again.

Two recorders filled with different values stand for two client processes; a third holds every value at
once. The merge of the first two (through the CLI, from run directories on disk) must equal the third in every
bucket, every reported percentile (LoadGen's rank rule) and every verdict check. The last test does the same
with two real `tailmark run` processes against a real server, checked against their interval logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hdrh.log import HistogramLogReader

from support.runcli import results, scenario, tailmark
from tailmark.cli import main
from tailmark.client import hlog
from tailmark.client.merge import load_part, merge_runs
from tailmark.client.recorder import METRICS, Recorder, scenario_keys
from tailmark.client.results import ClassResult, RunResult, ScenarioResult
from tailmark.client.settings import EffectiveSettings, Scenario, ScenarioSettings, resolve
from tailmark.client.verdict import percentile_ns

MS = 1_000_000
CLASSES = ("default", "probe")


def _settings(seed: int, **changes) -> EffectiveSettings:
    requested = {
        "scenario": Scenario.SERVER, "target_qps": 50.0, "latency_bound_ms": 5.0, "min_duration_s": 1.0,
        "min_query_count": 1200, "schedule_seed": seed, **changes,
    }  # fmt: skip
    return resolve(ScenarioSettings(**requested), mlperf=False)


def _values(seed: int, n: int, median_ms: float, slow: int) -> np.ndarray:
    """n latencies (ns) around median_ms, the last `slow` of them far over the 5 ms bound."""
    rng = np.random.default_rng(seed)
    ns = rng.lognormal(np.log(median_ms * MS), 0.4, n).astype(np.int64)
    ns[n - slow :] = rng.integers(20 * MS, 40 * MS, slow)
    return ns


def _record(recorder: Recorder, cls: str, latency_ns: np.ndarray, lag_ns: np.ndarray) -> None:
    for latency, lag in zip(latency_ns.tolist(), lag_ns.tolist(), strict=True):
        recorder.record(("server", cls), intended_ns=0, sent_ns=lag, done_ns=latency)


def _result(recorder: Recorder, settings: EffectiveSettings, duration_s: float, cpu_pct: float) -> ScenarioResult:
    classes = {}
    for key in recorder.keys():
        histograms = {m: recorder.histogram(key, m) for m in METRICS}
        classes[key[1]] = ClassResult(traffic_class=key[1], **histograms, errors=recorder.errors(key))
    return ScenarioResult(settings=settings, classes=classes, duration_s=duration_s, client_cpu_pct=cpu_pct)


# Two processes: different sizes, medians, lag and slow tails; each alone is too short (1,200 queries needed).
PARTS = [
    {"seed": 1, "n": {"default": 650, "probe": 60}, "median_ms": 1.0, "slow": 1, "duration_s": 14.0, "cpu": 12.0},
    {"seed": 2, "n": {"default": 610, "probe": 55}, "median_ms": 1.6, "slow": 2, "duration_s": 13.5, "cpu": 19.0},
]


@pytest.fixture
def runs(tmp_path: Path) -> tuple[list[Path], ScenarioResult, Recorder]:
    """Two run directories on disk, and the result of one recorder holding all their values."""
    everything = Recorder()
    dirs = []
    for part in PARTS:
        recorder = Recorder()
        for i, cls in enumerate(CLASSES):
            seed = part["seed"] * 10 + i
            latency = _values(seed, part["n"][cls], part["median_ms"], part["slow"] if cls == "default" else 0)
            lag = np.random.default_rng(seed + 100).integers(1_000, 80_000, len(latency))
            _record(recorder, cls, latency, lag)
            _record(everything, cls, latency, lag)
        if part["seed"] == 2:
            recorder.record_error(("server", "default"), "UNAVAILABLE")
        out = tmp_path / f"run{part['seed']}"
        out.mkdir()
        result = _result(recorder, _settings(part["seed"]), part["duration_s"], part["cpu"])
        RunResult(environment={}, scenarios=[result], complete=True).write(out / "results.json")
        (out / "histograms.json").write_text(json.dumps(recorder.to_dict()))
        dirs.append(out)
    everything.record_error(("server", "default"), "UNAVAILABLE")
    # one process at the summed rate, over the longer window, at the busier process's CPU
    settings = _settings(1, target_qps=100.0)
    return dirs, _result(everything, settings, 14.0, 19.0), everything


def _checks(result: ScenarioResult) -> dict[str, list[tuple[str, bool, str]]]:
    return {cls: [(c.name, c.passed, c.detail) for c in v.checks] for cls, v in result.verdicts.items()}


def test_merged_runs_equal_one_run_of_all_values(runs, tmp_path, capsys, assert_same_histogram) -> None:
    dirs, expected, everything = runs
    out = tmp_path / "merged.json"
    assert main(["merge", *map(str, dirs), "-o", str(out)]) == 0
    printed = capsys.readouterr().out

    # the written histograms: every bucket of every metric, as one recorder of all values has them
    merged_file = Recorder.from_dict(json.loads(out.read_text()))
    assert merged_file.keys() == everything.keys()
    for key in everything.keys():
        for metric in METRICS:
            assert_same_histogram(merged_file.histogram(key, metric), everything.histogram(key, metric))
        assert merged_file.errors(key) == everything.errors(key)
        # the printed p99 follows LoadGen's rank rule on bucket upper edges, as results.json does
        p99 = percentile_ns(everything.histogram(key), 99.0)
        n = everything.histogram(key).get_total_count()
        assert f"{key[0]}/{key[1]}: {n} requests, p99 {p99 / 1e6:.3f} ms" in printed

    # 1,260 values: LoadGen's rank is floor(1260 * 0.99) + 1 = 1248, HDR's own round(1247.4) = 1247
    default = everything.histogram(("server", "default"))
    assert percentile_ns(default, 99.0) > default.get_value_at_percentile(99.0)

    # the verdicts are judged again from the merged histograms, not carried over from either run
    merged = merge_runs([load_part(d) for d in dirs])
    (result,) = merged.scenarios
    assert _checks(result) == _checks(expected)
    assert result.to_dict()["classes"] == expected.to_dict()["classes"]  # every percentile of every metric
    assert result.settings.target_qps == 100.0 and result.duration_s == 14.0
    for d in dirs:  # each process alone was too short; together they are long enough
        alone = results(d)["scenarios"][0]["classes"]["all"]["verdict"]["checks"]
        assert not next(c for c in alone if c["name"] == "min_queries")["passed"]
    assert next(c for c in result.verdict.checks if c.name == "min_queries").passed
    queries = sum(sum(part["n"].values()) for part in PARTS) + 1  # and the one error
    assert f"server: {result.verdict.label}, judged again from the merged histograms of 2 runs: {queries} queries" in (
        printed
    )


def test_differing_settings_are_refused_with_one_line(runs, tmp_path, capsys) -> None:
    dirs, _, _ = runs
    other = tmp_path / "other"
    other.mkdir()
    recorder = Recorder()
    _record(recorder, "default", _values(5, 100, 1.0, 0), np.zeros(100, np.int64))
    result = _result(recorder, _settings(3, latency_bound_ms=20.0), 10.0, 5.0)
    RunResult(environment={}, scenarios=[result], complete=True).write(other / "results.json")
    (other / "histograms.json").write_text(json.dumps(recorder.to_dict()))
    out = tmp_path / "merged.json"
    assert main(["merge", str(dirs[0]), str(other), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"tailmark merge: scenario server: latency_bound_ms differs (5.0 in {dirs[0]}, 20.0 in {other}); "
        "only runs with the same settings merge"
    )
    assert not out.exists()


def test_without_results_the_histograms_merge_and_no_verdict_is_guessed(runs, tmp_path, capsys) -> None:
    dirs, _, everything = runs
    first = tmp_path / "first.json"
    assert main(["merge", *map(str, dirs), "-o", str(first)]) == 0
    capsys.readouterr()
    # an earlier merge's output has no results.json beside it: its histograms merge, no verdict is made up
    assert main(["merge", str(first), "-o", str(tmp_path / "again.json")]) == 0
    printed = capsys.readouterr().out
    assert f"note: verdicts not recomputed: no results.json with the settings for {first}" in printed
    assert "judged again" not in printed
    n = everything.histogram(("server", "default")).get_total_count()
    assert f"server/default: {n} requests" in printed


def test_same_seed_is_named_in_a_note(runs) -> None:
    dirs, _, _ = runs
    merged = merge_runs([load_part(dirs[0]), load_part(dirs[0])])
    assert any("share schedule_seed and target_qps" in note for note in merged.notes)


def test_scenario_names_follow_the_run() -> None:
    names = ["server", "poisson", "server", "server"]
    settings = [resolve(ScenarioSettings(scenario=Scenario(n)), mlperf=False) for n in names]
    assert scenario_keys(str(s.scenario) for s in settings) == ["server", "poisson", "server-2", "server-3"]


def _interval_sum(hlog_path: Path, tag: str):
    total = hlog.new_histogram()
    reader = HistogramLogReader(str(hlog_path), None)
    while (interval := reader.get_next_interval_histogram()) is not None:
        if interval.get_tag() == tag:
            hlog.add_into(total, interval)
    return total


def test_two_client_processes_merge_against_their_interval_logs(server, tmp_path, assert_same_histogram) -> None:
    """Two real `tailmark run` processes side by side, each with its own seed and half the rate."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    run = f"run --target {server.target} --model identity --scenario poisson --target-qps 100 --duration 1"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tailmark", *run.split(), "--warmup", "0", "--seed", str(seed), "--out", str(d)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, d in zip((11, 12), dirs, strict=True)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    out = tmp_path / "merged.json"
    shown = tailmark("merge", *map(str, dirs), "-o", str(out))
    assert shown.returncode == 0, shown.stderr

    docs = [scenario(results(d), "poisson") for d in dirs]
    ok = sum(doc["classes"]["all"]["ok_count"] for doc in docs)
    assert f"poisson/default: {ok} requests" in shown.stdout
    merged_file = Recorder.from_dict(json.loads(out.read_text()))
    for metric in METRICS:  # HdrHistogram's own log reader, summing both processes' intervals
        tag = f"poisson/default/{metric}"
        from_logs = _interval_sum(dirs[0] / "latency.hlog", tag)
        hlog.add_into(from_logs, _interval_sum(dirs[1] / "latency.hlog", tag))
        assert_same_histogram(merged_file.histogram(("poisson", "default"), metric), from_logs)

    (result,) = merge_runs([load_part(d) for d in dirs]).scenarios
    assert result.settings.target_qps == 200.0
    assert result.duration_s == max(doc["duration_s"] for doc in docs)
    queries = ok + sum(doc["classes"]["all"]["error_count"] for doc in docs)
    detail = next(c.detail for c in result.verdict.checks if c.name == "min_queries")
    assert detail.startswith(f"{queries} queries")
    p99 = percentile_ns(merged_file.histogram(("poisson", "default")), 99.0) / 1e6
    assert f"p99 {p99:.3f} ms" in shown.stdout
    assert f"poisson: {result.verdict.label}, judged again from the merged histograms of 2 runs" in shown.stdout
