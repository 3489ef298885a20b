"""The concurrency scenario (closed loop, N in flight) against a server of known latency: Little's law holds,
the rate cap and the think time are honoured, latency is sent -> done, and the open loop never meets the limiter."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from support.histograms import histogram_of
from support.repository import sleep_config
from support.runcli import latency, results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.client.errors import ConfigError
from tailmark.client.settings import Scenario, ScenarioSettings, resolve
from tailmark.client.verdict import judge
from tailmark.server.default_repository import write_model

MS = 1_000_000
QUICK = ("--duration", "2", "--warmup", "0.5", "--min-queries", "20", "--no-calibration", "--no-progress")


@pytest.fixture(scope="module")
def sleep_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sleep-repo")
    write_model(root, "one", sleep_config(20, instances=1))  # one 20 ms server: N in flight queue behind it
    write_model(root, "many", sleep_config(20, instances=8))  # enough instances: no queueing up to 8
    with ServerProcess(root) as process:
        yield process


def _rate(doc: dict, name: str) -> float:
    return scenario(doc, name)["classes"]["all"]["achieved_rate_qps"]


def test_one_instance_queues_the_n_in_flight(sleep_server, tmp_path):
    """Concurrency 4 on one 20 ms instance: 50/s, and each request waits for the three ahead of it (80 ms)."""
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", sleep_server.target, "--model", "one", "--scenario", "concurrency", "--concurrency", "4",
        *QUICK, "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    rate, p50 = _rate(doc, "concurrency"), latency(doc, "concurrency")["p50"]
    assert 45.0 <= rate <= 51.0, rate  # one instance can do at most 50/s
    assert 78.0 <= p50 <= 90.0, p50
    assert abs(rate * latency(doc, "concurrency")["mean"] / 1000 - 4) <= 0.4  # Little's law: N = X * R
    sent = scenario(doc, "concurrency")
    assert sent["settings"]["latency_from"] == "sent" and sent["settings"]["effective"]["concurrency"] == 4
    assert latency(doc, "concurrency", "send_lag")["max"] == 0.0  # intended = sent by definition
    assert latency(doc, "concurrency", "sent_to_done")["p50"] == p50


def test_littles_law_rate_cap_and_think_time(sleep_server, tmp_path):
    """Enough instances: throughput = N / latency; a rate cap holds the loop under it; a think time adds
    to each slot's cycle (throughput = N / (latency + think)). Three scenarios of one run. The 15 % allows
    for the client's own time between a completion and the next send, which grows on a crowded host."""
    config = tmp_path / "run.yaml"
    config.write_text(
        textwrap.dedent(
            """
            scenarios:
              - {scenario: concurrency, concurrency: 4}
              - {scenario: concurrency, concurrency: 4, rate_cap_qps: 60}
              - {scenario: concurrency, concurrency: 2, think_time_ms: 30}
            """
        )
    )
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", sleep_server.target, "--model", "many", "--config", str(config), *QUICK, "--out", str(out)
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    free, capped, thinking = (entry["classes"]["all"] for entry in results(out)["scenarios"])
    p50, mean = free["latency_ms"]["intended_to_done"]["p50"], free["latency_ms"]["intended_to_done"]["mean"]
    # no queueing (one queued request would add a whole 20 ms): the service time and the loopback floor, which
    # reached 5.4 ms once on a crowded 2-core box
    assert 20.0 <= p50 <= 30.0, p50
    expected = 4 / (mean / 1000)
    assert abs(free["achieved_rate_qps"] - expected) <= 0.15 * expected, (free["achieved_rate_qps"], expected)
    assert free["achieved_rate_qps"] > 150.0  # well above the cap below: the cap is what holds it
    assert 54.0 <= capped["achieved_rate_qps"] <= 61.0, capped["achieved_rate_qps"]
    assert capped["latency_ms"]["intended_to_done"]["p50"] <= 30.0  # the cap's wait is before the send
    mean = thinking["latency_ms"]["intended_to_done"]["mean"]
    expected = 2 / ((mean + 30.0) / 1000)
    assert abs(thinking["achieved_rate_qps"] - expected) <= 0.15 * expected, (thinking["achieved_rate_qps"], expected)
    assert thinking["achieved_rate_qps"] < 45.0  # without the think time it would be ~90/s
    assert thinking["latency_ms"]["intended_to_done"]["p50"] <= 30.0  # the think time is not latency either


def test_the_open_loop_never_imports_the_limiter():
    """The rate limiter's coarse sleeps must never pace an open-loop schedule: an open-loop run leaves
    aiolimiter unimported, a capped concurrency run imports it."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from tailmark.client.dispatcher import Dispatcher, Stop
        from tailmark.client.recorder import Recorder
        from tailmark.client.samples import random_pool
        from tailmark.client.schedule import poisson
        from tailmark.client.transport import ModelInfo, NullTransport, TensorInfo

        info = ModelInfo(name="m", version="1", platform="p", inputs=(TensorInfo("INPUT0", "FP32", (4,)),), outputs=(),
                         max_batch_size=0)
        pool = random_pool(info, count=4, seed=0)

        def dispatcher():
            return Dispatcher(transport=NullTransport(info), pool=pool, recorder=Recorder(), scenario="s",
                              sample_seed=0)

        async def main():
            stop = Stop(min_duration_ns=200_000_000, min_queries=10)
            await dispatcher().open_loop(poisson(500.0, seed=1), warmup_ns=0, stop=stop, max_outstanding=0)
            print("open", "aiolimiter" in sys.modules)
            d = dispatcher()
            await d.concurrent_loop(concurrency=2, think_time_ns=0, rate_cap_qps=500.0, batch_size=1,
                                    warmup_ns=0, stop=stop, traffic_class="c")
            print("closed", "aiolimiter" in sys.modules, d.completed)

        asyncio.run(main())
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    assert lines[0] == "open False"
    word, imported, completed = lines[1].split()
    assert (word, imported) == ("closed", "True") and 80 <= int(completed) <= 130  # 500/s for 0.2 s


def test_settings_of_the_concurrency_scenario():
    eff = resolve(ScenarioSettings(scenario=Scenario.CONCURRENCY), mlperf=False)
    assert (eff.concurrency, eff.think_time_ms, eff.rate_cap_qps) == (1, 0.0, 0.0)
    assert eff.latency_bound_ms == 0.0 and eff.early_stopping_percentile == 99.0 and eff.latency_from == "sent"
    assert resolve(ScenarioSettings(scenario=Scenario.SERVER), mlperf=False).latency_from == "intended"
    with pytest.raises(ConfigError, match="concurrency=0 requested; must be >= 1"):
        resolve(ScenarioSettings(scenario=Scenario.CONCURRENCY, concurrency=0), mlperf=False)
    with pytest.raises(ConfigError, match="concurrency=4 requested; only used by the concurrency scenario"):
        resolve(ScenarioSettings(scenario=Scenario.SERVER, concurrency=4), mlperf=False)
    with pytest.raises(ConfigError, match=re.escape("rate_cap_qps=-1.0 requested; must be >= 0")):
        resolve(ScenarioSettings(scenario=Scenario.CONCURRENCY, rate_cap_qps=-1.0), mlperf=False)
    with pytest.raises(ConfigError, match="closed loop"):
        resolve(ScenarioSettings(scenario=Scenario.CONCURRENCY, target_qps=10), mlperf=False)


def test_a_bound_is_judged_on_the_latency_with_early_stopping():
    settings = resolve(
        ScenarioSettings(scenario=Scenario.CONCURRENCY, min_duration_s=1.0, latency_bound_ms=10.0), mlperf=False
    )
    fast = judge(settings, duration_s=2.0, latency=histogram_of([2 * MS] * 1000), client_cpu_pct=10)
    assert fast.valid and [c.name for c in fast.checks][:4] == [
        "min_duration", "min_queries", "early_stopping", "latency_bound"
    ]  # fmt: skip
    slow = judge(settings, duration_s=2.0, latency=histogram_of([2 * MS] * 970 + [30 * MS] * 30), client_cpu_pct=10)
    failed = {c.name: c for c in slow.failed}
    assert set(failed) == {"early_stopping", "latency_bound"} and slow.cause == "endpoint"
    assert "Lower the concurrency" in failed["latency_bound"].recommendation
