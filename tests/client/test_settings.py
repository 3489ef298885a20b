"""Settings: defaults per scenario and mode, refusals in LoadGen's words, YAML files."""

from __future__ import annotations

import dataclasses
import re

import pytest

from tailmark.client.errors import ConfigError
from tailmark.client.settings import (
    CLOSED_LOOP,
    ENDPOINT_FIELDS,
    OFFICIAL_SCHEDULE_SEED,
    EffectiveSettings,
    Scenario,
    ScenarioSettings,
    load_yaml,
    resolve,
    settings_from_mapping,
)
from tailmark.client.traffic_classes import parse_classes


def _request(scenario: Scenario, **kw) -> ScenarioSettings:
    if scenario is Scenario.TRACE:
        kw.setdefault("trace_path", "arrivals.csv")
    if scenario is Scenario.MIXED:  # rates are the classes' own
        kw.setdefault("classes", parse_classes([{"name": "a", "arrival": {"process": "poisson", "rate_qps": 50}}]))
    elif scenario not in CLOSED_LOOP and scenario is not Scenario.TRACE:
        kw.setdefault("target_qps", 50.0)
    return ScenarioSettings(scenario=scenario, **kw)


@pytest.mark.parametrize("scenario", list(Scenario))
@pytest.mark.parametrize("mlperf", [False, True])
def test_resolve_fills_every_field(scenario: Scenario, mlperf: bool) -> None:
    requested = _request(scenario)
    if scenario is Scenario.MIXED and mlperf:
        with pytest.raises(ConfigError, match="not an MLPerf scenario"):
            resolve(requested, mlperf=mlperf)
        return
    eff = resolve(requested, mlperf=mlperf)
    assert isinstance(eff, EffectiveSettings)
    assert eff.requested is requested and eff.mlperf is mlperf
    for f in dataclasses.fields(ScenarioSettings):
        if f.name in ENDPOINT_FIELDS:  # the run's transport and model: filled by scenario_routes.fill
            continue
        if f.name != "classes" or scenario is Scenario.MIXED:  # only a mixed scenario has classes
            assert getattr(eff, f.name) is not None, f.name
    assert eff.min_duration_s == (600.0 if mlperf else 10.0)
    assert eff.is_open_loop == (scenario not in CLOSED_LOOP and scenario is not Scenario.OFFLINE)


@pytest.mark.parametrize(
    ("scenario", "percentile", "min_queries", "samples_per_query"),
    [
        (Scenario.SINGLE_STREAM, 90.0, 100, 1),
        (Scenario.MULTI_STREAM, 99.0, 662, 8),
        (Scenario.SERVER, 99.0, 100, 1),
        (Scenario.OFFLINE, 0.0, 24576, 1),
    ],
)
def test_mlperf_scenario_defaults(
    scenario: Scenario, percentile: float, min_queries: int, samples_per_query: int
) -> None:
    eff = resolve(_request(scenario), mlperf=True)
    assert eff.early_stopping_percentile == percentile
    assert eff.min_query_count == min_queries
    assert eff.samples_per_query == samples_per_query
    assert eff.schedule_seed == OFFICIAL_SCHEDULE_SEED


def test_server_defaults_to_a_10_ms_bound_and_other_open_loop_to_none() -> None:
    assert resolve(_request(Scenario.SERVER), mlperf=False).latency_bound_ms == 10.0
    assert resolve(_request(Scenario.POISSON), mlperf=False).latency_bound_ms == 0.0


def test_offline_sample_count_is_sized_from_duration_and_rate() -> None:
    # LoadGen: max(min_query_count, 1.1 x min_duration x expected qps)
    eff = resolve(ScenarioSettings(scenario=Scenario.OFFLINE, target_qps=1000.0), mlperf=True)
    assert eff.offline_sample_count == 660_000
    eff = resolve(ScenarioSettings(scenario=Scenario.OFFLINE, target_qps=1.0), mlperf=True)
    assert eff.offline_sample_count == 24576


def test_requested_values_win_over_defaults() -> None:
    eff = resolve(_request(Scenario.SERVER, min_duration_s=3.0, latency_bound_ms=25.0), mlperf=False)
    assert (eff.min_duration_s, eff.latency_bound_ms, eff.target_qps) == (3.0, 25.0, 50.0)
    assert eff.requested.warmup_s is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"target_qps": -1}, "target_qps=-1 requested; must be > 0"),
        ({"target_qps": 0}, "target_qps=0 requested; must be > 0"),
        ({"batch_size": 0}, "batch_size=0 requested; must be >= 1"),
        ({"min_duration_s": -5.0}, "min_duration_s=-5.0 requested; must be >= 0"),
        ({"early_stopping_percentile": 100.0}, "early_stopping_percentile=100.0 requested"),
        ({"latency_bound_ms": 0.0}, "needs a latency bound > 0"),
        ({"samples_per_query": 8}, "only multi-stream"),
        ({"trace_path": "t.csv"}, "only used by the trace scenario"),
        ({"min_duration_s": 20.0, "max_duration_s": 5.0}, "max_duration_s=5.0 requested; must be 0 or >= "),
        ({"min_query_count": 10, "max_query_count": 5}, "max_query_count=5 requested"),
    ],
)
def test_server_refusals(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(ScenarioSettings(scenario=Scenario.SERVER, **kw), mlperf=False)


@pytest.mark.parametrize("scenario", sorted(CLOSED_LOOP))
def test_closed_loop_refuses_an_offered_rate_and_a_bound(scenario: Scenario) -> None:
    with pytest.raises(ConfigError, match="closed loop"):
        resolve(ScenarioSettings(scenario=scenario, target_qps=10), mlperf=False)
    if scenario is Scenario.CONCURRENCY:  # its optional bound is judged on sent -> done
        assert resolve(ScenarioSettings(scenario=scenario, latency_bound_ms=5), mlperf=False).latency_bound_ms == 5
        return
    with pytest.raises(ConfigError, match="no latency bound"):
        resolve(ScenarioSettings(scenario=scenario, latency_bound_ms=5), mlperf=False)


def test_trace_needs_a_path_and_refuses_a_rate() -> None:
    with pytest.raises(ConfigError, match="trace_path not set"):
        resolve(ScenarioSettings(scenario=Scenario.TRACE), mlperf=False)
    with pytest.raises(ConfigError, match="trace_speed"):
        resolve(ScenarioSettings(scenario=Scenario.TRACE, trace_path="t", target_qps=5), mlperf=False)


def test_mlperf_refuses_lower_floors_other_seeds_and_an_implicit_rate() -> None:
    with pytest.raises(ConfigError, match=re.escape("min_duration_s=60.0 requested; --mlperf needs >= 600")):
        resolve(_request(Scenario.SERVER, min_duration_s=60.0), mlperf=True)
    with pytest.raises(ConfigError, match="min_query_count=100 requested; --mlperf multi-stream needs >= 662"):
        resolve(_request(Scenario.MULTI_STREAM, min_query_count=100), mlperf=True)
    with pytest.raises(ConfigError, match="official seed"):
        resolve(_request(Scenario.SERVER, schedule_seed=1), mlperf=True)
    with pytest.raises(ConfigError, match="target_qps not set"):
        resolve(ScenarioSettings(scenario=Scenario.SERVER), mlperf=True)
    # quick mode accepts all of them
    eff = resolve(_request(Scenario.SERVER, min_duration_s=60.0, schedule_seed=1), mlperf=False)
    assert eff.schedule_seed == 1


def test_to_dict_keeps_effective_and_requested() -> None:
    d = resolve(_request(Scenario.MULTI_STREAM), mlperf=False).to_dict()
    assert d["effective"]["scenario"] == "multi-stream" and d["effective"]["samples_per_query"] == 8
    assert d["requested"]["samples_per_query"] is None and d["mlperf"] is False


def test_load_yaml_round_trip(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scenario: server\ntarget_qps: 250\nlatency_bound_ms: 15\nmin_query_count: 1000\n")
    data = load_yaml(path)
    assert data == {"scenario": Scenario.SERVER, "target_qps": 250.0, "latency_bound_ms": 15.0, "min_query_count": 1000}
    eff = resolve(settings_from_mapping(data), mlperf=False)
    assert (eff.target_qps, eff.latency_bound_ms, eff.min_query_count) == (250.0, 15.0, 1000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target_qsp: 5\n", "unknown setting 'target_qsp'"),
        ("scenario: serverr\n", "scenario=serverr requested; must be one of"),
        ("min_query_count: 2.5\n", "min_query_count=2.5 requested; must be int"),
        ("target_qps: fast\n", "target_qps='fast' requested; must be float"),
        ("target_qps: true\n", "not true/false"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_load_yaml_refusals(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_yaml(path)


def test_load_yaml_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=re.escape("nope.yaml")):
        load_yaml(tmp_path / "nope.yaml")


def test_flags_win_over_the_run_file_even_inside_a_scenario_entry(tmp_path) -> None:
    from tailmark.cli import build_parser
    from tailmark.client.cli import build_plan

    path = tmp_path / "run.yaml"
    path.write_text(
        "defaults: {warmup_s: 1}\nscenarios:\n  - {scenario: server, target_qps: 50, min_duration_s: 20}\n"
        "  - {scenario: single-stream, min_duration_s: 20}\n"
    )
    base = ["run", "--config", str(path), "--target", "127.0.0.1:1", "--model", "m"]

    def plan(*flags: str):
        return {s.scenario.value: s for s in build_plan(build_parser().parse_args([*base, *flags])).scenarios}

    from_file = plan()
    assert from_file["server"].min_duration_s == 20.0 and from_file["server"].target_qps == 50.0
    typed = plan("--duration", "3", "--target-qps", "70", "--warmup", "0.5")
    assert typed["server"].min_duration_s == typed["single-stream"].min_duration_s == 3.0
    assert typed["server"].target_qps == 70.0 and typed["server"].warmup_s == 0.5
