"""Scenarios with their own transport and model (client/scenario_routes.py).

One run file against one ``tailmark serve``: a KServe scenario over gRPC (h2) against an identity model and a
generative one over the OpenAI routes against the synthetic LLM give one results.json with both, each naming its
transport and model, the generative one with token timings. The built-in run's plan ends with its generative
scenario (checked without running it).
"""

from __future__ import annotations

import json

import pytest
import yaml

from support.repository import identity_config, llm_config
from support.runcli import results, tailmark
from support.serve import ServerProcess
from tailmark.cli import build_parser
from tailmark.client.cli import build_plan
from tailmark.client.errors import ConfigError
from tailmark.client.scenario_routes import EMBEDDED_GENERATIVE, endpoint_lines, lane_key
from tailmark.server.default_repository import write_model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenario-routes")
    write_model(root, "identity", identity_config())
    write_model(root, "llm", llm_config(prefill_base_ms=5, prefill_per_token_ms=0.01, decode_base_ms=2,
                                        decode_per_sequence_ms=0.2))  # fmt: skip
    with ServerProcess(root, "--http-port", "0") as process:
        yield process


def _plan(*argv: str):
    return build_plan(build_parser().parse_args(["run", *argv]))


def test_a_kserve_and_an_openai_scenario_share_one_run(server, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "target": server.target,
        "model": "identity",
        "defaults": {"min_duration_s": 1, "warmup_s": 0.2, "min_query_count": 10},
        "scenarios": [
            {"scenario": "concurrency", "concurrency": 2},
            {"scenario": "concurrency", "concurrency": 2, "transport": "openai", "model": "llm",
             "target": f"http://{server.rest_address}", "input_tokens": 12, "output_tokens": 5},
        ],
    }))  # fmt: skip
    out = tmp_path / "out"
    run = tailmark("run", "--config", str(config), "--shape", "INPUT0:4", "--no-progress", "--out", str(out),
                   timeout_s=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    kserve, generative = doc["scenarios"]
    assert kserve["scenario"] == generative["scenario"] == "concurrency"
    effective = kserve["settings"]["effective"]
    assert (effective["transport"], effective["model"]) == ("h2", "identity")
    assert kserve["settings"]["requested"]["transport"] is None  # the run's, not the scenario's own
    assert (generative["settings"]["effective"]["transport"], generative["settings"]["effective"]["model"]) == (
        "openai", "llm")  # fmt: skip
    assert kserve["classes"]["all"]["ok_count"] >= 10 and kserve["classes"]["all"]["error_count"] == 0
    assert kserve["classes"]["all"].get("tokens") is None
    assert kserve["server_stats"]["requests"] >= kserve["classes"]["all"]["ok_count"]  # identity's (warm-up too)
    tokens = generative["classes"]["all"]["tokens"]
    assert generative["classes"]["all"]["error_count"] == 0
    assert tokens["requests"] >= 10 and tokens["output_tokens"]["p50"] == 5  # synth-llm runs to max_tokens
    assert tokens["input_tokens"]["p50"] == 12  # the scenario's own length, served by the same token rule
    assert tokens["token_source"]["output"] == {"usage": tokens["requests"]}
    stored = json.loads((out / "tokens.json").read_text())  # what tailmark merge adds up: the generative one only
    assert [series["scenario"] for series in stored["series"]] == ["concurrency-2"]
    # environment.target and client_transport are the first scenario's; endpoints names both
    endpoints = doc["environment"]["endpoints"]
    assert [(e["transport"], e["address"], e["model"]) for e in endpoints] == [
        ("h2", server.target, "identity"), ("openai", f"http://{server.rest_address}", "llm")]  # fmt: skip
    assert doc["environment"]["target"]["model"] == "identity"
    assert doc["calibration"]["endpoint"] == f"h2 {server.target}"  # the client calibrated against the first
    assert f"client CPU per request against h2 {server.target}" in run.stdout
    page = (out / "report.html").read_text()
    assert f"endpoints: h2 {server.target} model identity, openai http://{server.rest_address} model llm" in page
    line = "endpoints: concurrency: h2 -> identity; concurrency: openai -> llm"
    assert line in run.stdout and endpoint_lines(doc) == [line]
    assert line.replace("->", "-&gt;") in (out / "report.html").read_text()


def test_the_built_in_run_ends_with_a_generative_scenario():
    plan = _plan()
    assert [(s.scenario.value, s.transport, s.model) for s in plan.scenarios][-2:] == [
        ("trace", "h2", "resnet"), ("concurrency", "openai", EMBEDDED_GENERATIVE["model"])]  # fmt: skip
    generative = plan.scenarios[-1]
    assert (generative.concurrency, generative.input_tokens, generative.output_tokens) == (4, 8, 16)
    assert (generative.ttft_bound_ms, generative.tpot_bound_ms, generative.latency_bound_ms) == (0, 0, 0)  # reported
    assert len({lane_key(s) for s in plan.scenarios}) == 2  # two connections: ResNet's and the LM's
    # flags still shorten every scenario; chosen scenarios, or a generative run transport, add none
    assert _plan("--duration", "3").scenarios[-1].min_duration_s == 3
    assert all(s.transport == "h2" for s in _plan("--scenario", "server").scenarios)
    assert {(s.transport, s.model) for s in _plan("--transport", "openai").scenarios} == {("openai", "synth-llm")}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"transport": "carrier-pigeon"}, "transport=carrier-pigeon requested; must be one of"),
        ({"input_tokens": 8}, "input_tokens needs transport openai or grpc-stream, not h2"),
        ({"transport": "h2", "slo_ttft_ms": 50}, "slo_ttft_ms needs transport openai or grpc-stream, not h2"),
        ({"transport": "openai", "input_tokens": 0}, "input_tokens=0 requested; must be >= 1"),
    ],
)
def test_an_endpoint_a_scenario_cannot_use_is_refused_in_one_line(tmp_path, entry, message):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"target": "127.0.0.1:1", "model": "m",
                                      "scenarios": [{"scenario": "single-stream", **entry}]}))  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        _plan("--config", str(config))
