"""Results: statistics from histograms, the schema round trip, atomic and partial writes."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from support.histograms import histogram_of
from tailmark.client.environment import PACKAGES, capture, package_version
from tailmark.client.results import (
    ALL,
    SCHEMA_VERSION,
    ClassResult,
    ResultsError,
    RunResult,
    ScenarioResult,
    latency_summary,
    load_results,
    validate,
    write_atomic,
)
from tailmark.client.settings import Scenario, ScenarioSettings, resolve

MS = 1_000_000


def _class(name: str, n: int, *, lag_ns: int = 50_000, seed: int = 0, **kw) -> ClassResult:
    rng = np.random.default_rng(seed)
    latency = rng.exponential(MS, n) + 100_000  # p99 ~4.7 ms: well under the 10 ms bound
    return ClassResult(name, histogram_of(latency), histogram_of(latency * 0.9), histogram_of([lag_ns] * n), **kw)


def _server(**kw) -> ScenarioResult:
    settings = resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=200, min_duration_s=5), mlperf=False)
    classes = kw.pop("classes", {"default": _class("default", 2000, offered_count=2000)})
    return ScenarioResult(settings, classes, kw.pop("duration_s", 10.0), **kw)


def test_latency_summary_matches_numpy() -> None:
    values = np.random.default_rng(3).lognormal(14, 1, 10_000).astype(np.int64) + 1
    doc = latency_summary(histogram_of(values))
    ordered = np.sort(values) / 1e6
    assert doc["count"] == 10_000
    assert doc["p99"] == pytest.approx(ordered[9900], rel=1e-3)
    assert doc["p99_9"] == pytest.approx(ordered[9990], rel=1e-3)
    assert doc["mean"] == pytest.approx(values.mean() / 1e6, rel=1e-3)
    assert doc["min"] == pytest.approx(ordered[0], rel=1e-3) and doc["max"] == pytest.approx(ordered[-1], rel=1e-3)
    pcts = [p for p, _ in doc["distribution"]]
    assert pcts[0] == 0.0 and pcts[-1] == 100.0 and pcts == sorted(pcts)
    assert latency_summary(histogram_of([]))["p50"] is None


def test_aggregate_all_adds_classes_losslessly() -> None:
    a, b = _class("a", 300, seed=1, errors={"UNAVAILABLE": 2}), _class("b", 700, seed=2, errors={"UNAVAILABLE": 1})
    result = _server(classes={"b": b, "a": a})
    assert list(result.by_class) == [ALL, "a", "b"]
    total = result.by_class[ALL]
    assert total.ok_count == 1000 and dict(total.errors) == {"UNAVAILABLE": 3}
    assert total.intended_to_done.get_max_value() == max(
        a.intended_to_done.get_max_value(), b.intended_to_done.get_max_value()
    )


def test_verdict_and_rates() -> None:
    result = _server()
    doc = result.to_dict()
    all_doc = doc["classes"][ALL]
    assert result.verdict.valid and doc["result"] == "VALID"
    assert all_doc["achieved_rate_qps"] == pytest.approx(200.0) and all_doc["offered_rate_qps"] == pytest.approx(200.0)
    assert all_doc["verdict"]["early_stopping_estimate_ms"] is not None
    assert doc["settings"]["effective"]["target_qps"] == 200 and doc["settings"]["requested"]["warmup_s"] is None


def test_verdict_and_repr_name_the_client_cpu() -> None:
    result = _server(client_cpu_pct=97.0)
    assert not result.verdict.valid and result.verdict.cause == "client"
    assert result.to_dict()["classes"][ALL]["verdict"]["cause"] == "client"
    text = repr(result)
    assert text.startswith("<ScenarioResult server INVALID: 2000 queries in 10.0 s (200.0/s of 200.0/s offered)")
    assert "failed (client): client_bound" in text and "CPU saturated" in text


def test_warnings_for_lag_errors_overflow_and_falling_behind() -> None:
    slow = _class("default", 500, lag_ns=3 * MS, errors={"DEADLINE_EXCEEDED": 5}, overflow_count=2, offered_count=2000)
    warnings = " | ".join(_server(classes={"default": slow}).warnings)
    for part in ("send lag p99 3.000 ms", "5 requests failed", "2 latencies above", "under the offered", "only 500"):
        assert part in warnings


def test_run_result_round_trip_and_partial_flag(tmp_path) -> None:
    path = tmp_path / "results.json"
    run = RunResult(environment=capture())
    run.scenarios.append(_server())
    run.write(path)
    partial = load_results(path)
    assert partial["complete"] is False and partial["schema_version"] == SCHEMA_VERSION
    run.interrupted = "SIGINT after scenario server"
    run.complete = True
    doc = run.write(path)
    back = load_results(path)
    assert back == json.loads(json.dumps(doc))
    assert back["interrupted"] == "SIGINT after scenario server"
    assert back["scenarios"][0]["classes"][ALL]["latency_ms"]["send_lag"]["p50"] == pytest.approx(0.05, rel=1e-3)


def test_load_results_refuses_bad_files(tmp_path) -> None:
    path = tmp_path / "r.json"
    doc = RunResult(environment={}, scenarios=[_server()]).to_dict()
    for mutate, message in [
        (lambda d: d.update(schema_version=2), "schema_version 2"),
        (lambda d: d.pop("complete"), "missing key 'complete'"),
        (lambda d: d["scenarios"][0]["classes"][ALL].pop("verdict"), "scenarios[0].classes.all: missing key"),
        (lambda d: d["scenarios"][0].update(duration_s="long"), "scenarios[0].duration_s: expected a number"),
        (lambda d: d.update(complete=1), "complete: expected bool"),
    ]:
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(ResultsError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_results(path)
    path.write_text("{not json")
    with pytest.raises(ResultsError, match="not JSON"):
        load_results(path)
    with pytest.raises(ResultsError, match=re.escape("missing.json")):
        load_results(tmp_path / "missing.json")


def test_validate_accepts_what_the_writer_writes() -> None:
    doc = RunResult(environment=capture(), scenarios=[_server()], complete=True).to_dict()
    validate(json.loads(json.dumps(doc)))


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path) -> None:
    path = tmp_path / "summary.csv"
    write_atomic(path, "old\n")
    write_atomic(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert os.listdir(tmp_path) == ["summary.csv"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no-such-dir" / "x", "x")


def test_environment_versions_come_from_metadata() -> None:
    env = capture()
    assert env["cpu_count_logical"] >= 1 and env["python"].count(".") == 2
    assert set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["numpy"] == np.__version__
    assert package_version("no-such-package-tailmark") is None


def test_all_class_keeps_min_when_a_class_only_failed():
    """Regression: upstream HdrHistogram.add() of an empty histogram set the aggregate's min to 0."""
    ok = ClassResult("ok", histogram_of([5 * MS]), histogram_of([4 * MS]), histogram_of([MS]))
    failing = ClassResult("failing", histogram_of([]), histogram_of([]), histogram_of([]), errors={"UNAVAILABLE": 3})
    result = ScenarioResult(
        resolve(ScenarioSettings(scenario=Scenario.SERVER), mlperf=False), {"ok": ok, "failing": failing}, 10.0
    )
    everything = result.by_class[ALL]
    assert everything.intended_to_done.get_min_value() == ok.intended_to_done.get_min_value() > 0
    assert everything.error_count == 3 and everything.ok_count == 1
