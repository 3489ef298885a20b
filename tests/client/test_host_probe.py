"""The host-noise probe and the client's self-calibration, as real processes against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import uvloop

from tailmark.client.calibration import NULL_RATES_QPS, calibrate
from tailmark.client.h2_transport import H2Transport
from tailmark.client.host_probe import HostProbe
from tailmark.client.pinning import split_cpus
from tailmark.client.samples import random_pool
from tailmark.client.settings import Scenario, ScenarioSettings, resolve


def test_probe_window_counts_its_wakeups_and_costs_little():
    with HostProbe(period_us=2000) as probe:
        time.sleep(0.5)  # the child imports numpy before its first wake-up
        probe.reset()
        time.sleep(2.2)
        window = probe.report()
        child = probe._process
    assert window is not None
    expected = window.wall_s / 0.002
    assert 0.5 * expected <= window.wakeups + window.missed <= 1.05 * expected
    assert window.lateness.get_total_count() == window.wakeups
    assert len(window.per_s) >= 2  # a point per whole second
    assert window.probe_cpu_pct < 10.0, window.probe_cpu_pct  # ~1 % on a quiet core; loose for busy CI hosts
    doc = window.to_dict()
    assert doc["late_ms"]["count"] == window.wakeups and doc["late_ms"]["p99"] >= doc["late_ms"]["p50"] > 0
    assert child.poll() is not None  # closed with the context


def test_reset_starts_a_new_window():
    with HostProbe(period_us=1000) as probe:
        time.sleep(1.0)
        probe.reset()
        time.sleep(0.3)
        window = probe.report()
    assert window is not None and window.wall_s < 0.6 and window.wakeups <= 0.6 / 0.001


CROWDED = """
import json, os, subprocess, sys, time
from tailmark.client.host_probe import HostProbe
cpu = int(sys.argv[1])
os.sched_setaffinity(0, {cpu})
hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # inherits the one CPU
try:
    with HostProbe() as probe:
        time.sleep(0.5)
        probe.reset()
        end = time.perf_counter() + 1.5
        while time.perf_counter() < end:  # a client that wants the CPU all the time
            pass
        window = probe.report()
finally:
    hog.kill()
print(json.dumps({"wait_pct": window.client_wait_pct, "involuntary": window.involuntary_switches}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run-queue wait comes from Linux schedstat")
def test_run_queue_wait_shows_a_neighbour_on_the_clients_cpu():
    cpu = max(split_cpus().client) if split_cpus() else 0
    out = subprocess.run([sys.executable, "-c", CROWDED, str(cpu)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    # a CPU hog shares the one CPU: the spinning client waits about half the window for its turn
    assert facts["wait_pct"] is not None and 20.0 <= facts["wait_pct"] <= 100.0, facts
    assert facts["involuntary"] > 10, facts


def test_calibration_measures_the_schedule_and_the_transport(server):
    async def main():
        transport = await H2Transport.connect(server.target)
        try:
            info = await transport.model_info("identity")
            pool = random_pool(info, count=8, seed=1, shapes={"INPUT0": (16,)})
            with HostProbe() as probe:
                return await calibrate(transport, pool, lag_bound_ms=1.0, probe=probe, timeout_s=10.0)
        finally:
            await transport.aclose()

    result = uvloop.run(main())
    assert 1 <= len(result.null_steps) <= len(NULL_RATES_QPS)
    first = result.null_steps[0]
    assert first.rate_qps == NULL_RATES_QPS[0] and first.cpu_us_per_request > 0
    assert 0.5 * first.rate_qps <= first.issued_qps <= 1.5 * first.rate_qps
    assert result.target_requests > 50 and result.target_errors == 0
    assert result.target_cpu_us_per_request > 0 and result.cpu_us_per_request > result.target_cpu_us_per_request
    assert result.ceiling_qps and result.ceiling_qps <= (result.schedule_ceiling_qps or float("inf"))
    assert result.idle_probe is not None and result.idle_probe.wakeups > 0
    assert result.seconds < 6.0
    doc = result.to_dict()
    assert doc["ceiling_qps"] == pytest.approx(result.ceiling_qps, abs=0.1) and doc["null_transport"]
    # a rate far beyond the ceiling is warned about before the run, with the processes it would take
    far = resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=50 * result.ceiling_qps), mlperf=False)
    near = resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=0.5 * result.ceiling_qps), mlperf=False)
    advice = result.advice([far, near])
    assert len(advice) == 1 and "beyond this client's measured ceiling" in advice[0]
    assert "it would take 50 client processes" in advice[0] or "it would take 51 client processes" in advice[0]


def test_split_cpus_keeps_server_and_client_apart():
    assert split_cpus((0,)) is None
    two = split_cpus((0, 1))
    assert two.server == (0,) and two.client == (1,)
    sixteen = split_cpus(tuple(range(16)))
    assert sixteen.client == (12, 13, 14, 15) and set(sixteen.server).isdisjoint(sixteen.client)
