"""Client self-calibration: what this client can do on this host, measured before the first scenario.

Three short steps (about two seconds in all):

1. **The host at rest**: the host-noise probe's wake-up lateness while the client does nothing.
2. **The schedule's ceiling**: Poisson steps against the null transport (LoadGen's null SUT: every request
   completes at once), so what is measured is the schedule, the issue loop and the request tasks: the issue rate
   and send lag per step, and the client CPU per request. The ceiling is the highest step that issued its rate
   with send-lag p99 within the bound and below 90 % of a core (a failing step is tried twice: one host hiccup in a
   quarter second is not a ceiling).
3. **The transport's cost**: a closed-loop burst against the real target (a few requests in flight for about a
   second, which also warms the endpoint): client CPU per request of the transport.

From the two CPU costs the client's ceiling against this target is estimated as the rate at which one process
would use 90 % of a core. ``Calibration.advice`` warns, before anything runs, about every scenario whose offered
rate is beyond it, and says how many client processes it would take.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from tailmark.client.attribution import BACKLOG_SHARE
from tailmark.client.dispatcher import NS, Dispatcher, Stop
from tailmark.client.host_probe import HostProbe, ProbeWindow
from tailmark.client.recorder import Recorder
from tailmark.client.samples import SamplePool
from tailmark.client.schedule import poisson
from tailmark.client.settings import EffectiveSettings, Scenario
from tailmark.client.transport import NullTransport, RequestFailed, Transport
from tailmark.client.verdict import percentile_ns

NULL_RATES_QPS = (2000.0, 5000.0, 10000.0, 20000.0, 40000.0)
NULL_STEP_S = 0.25
TARGET_BURST_S = 0.8
TARGET_IN_FLIGHT = 8
IDLE_PROBE_S = 0.4
USABLE_CORE_SHARE = 0.9  # the client-CPU bound of the verdict


@dataclass(frozen=True, slots=True)
class NullStep:
    rate_qps: float
    issued_qps: float  # sent inside the window, per second of it
    lag_p99_ms: float
    cpu_us_per_request: float
    cpu_pct: float = 0.0  # of one core, over the step
    offered_qps: float = 0.0  # the seeded schedule's own rate over the step (Poisson: near rate_qps)

    def passed(self, lag_bound_ms: float) -> bool:
        """On time, at the rate, with a core to spare: a step at 100 % CPU is on its way to falling behind."""
        return (
            self.lag_p99_ms <= lag_bound_ms
            and self.issued_qps >= (1.0 - BACKLOG_SHARE) * self.offered_qps
            and self.cpu_pct <= 100.0 * USABLE_CORE_SHARE
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "rate_qps": self.rate_qps,
            "issued_qps": round(self.issued_qps, 1),
            "lag_p99_ms": round(self.lag_p99_ms, 4),
            "cpu_us_per_request": round(self.cpu_us_per_request, 2),
            "cpu_pct": round(self.cpu_pct, 1),
        }


@dataclass(frozen=True, slots=True)
class Calibration:
    lag_bound_ms: float
    null_steps: tuple[NullStep, ...]
    target_requests: int = 0
    target_errors: int = 0
    target_cpu_us_per_request: float | None = None
    idle_probe: ProbeWindow | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def schedule_ceiling_qps(self) -> float | None:
        """The highest null-transport step whose send-lag p99 stayed within the bound."""
        passed = [s.rate_qps for s in self.null_steps if s.passed(self.lag_bound_ms)]
        return max(passed) if passed else None

    @property
    def cpu_us_per_request(self) -> float | None:
        """Client CPU per request against the target: the issue path (null) plus the transport (burst)."""
        if self.target_cpu_us_per_request is None:
            return None
        passed = [s for s in self.null_steps if s.passed(self.lag_bound_ms)] or list(self.null_steps)
        issue_path = min((s.cpu_us_per_request for s in passed), default=0.0)
        return issue_path + self.target_cpu_us_per_request

    @property
    def ceiling_qps(self) -> float | None:
        """The rate one client process can offer this target: CPU-limited, and never above the schedule's."""
        cpu = self.cpu_us_per_request
        limits = [self.schedule_ceiling_qps] if self.schedule_ceiling_qps else []
        if cpu:
            limits.append(USABLE_CORE_SHARE * 1e6 / cpu)
        return min(limits) if limits else None

    def advice(self, scenarios: list[EffectiveSettings]) -> list[str]:
        """One warning per open-loop scenario whose offered rate is beyond this client's ceiling."""
        ceiling = self.ceiling_qps
        out = []
        if not ceiling:
            return out
        for s in scenarios:
            if s.scenario not in (Scenario.SERVER, Scenario.POISSON, Scenario.FIXED_INTERVAL) or not s.target_qps:
                continue
            if s.target_qps > ceiling:
                processes = math.ceil(s.target_qps / ceiling)
                out.append(
                    f"{s.scenario} at {s.target_qps:g}/s is beyond this client's measured ceiling of ~{ceiling:.0f}/s "
                    f"on this host ({self.cpu_us_per_request:.0f} us CPU per request): it would take {processes} "
                    "client processes, each on a core of its own"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        cpu = self.cpu_us_per_request
        ceiling = self.ceiling_qps
        return {
            "seconds": round(self.seconds, 3),
            "send_lag_bound_ms": self.lag_bound_ms,
            "null_transport": [s.to_dict() for s in self.null_steps],
            "schedule_ceiling_qps": self.schedule_ceiling_qps,
            "target_requests": self.target_requests,
            "target_errors": self.target_errors,
            "target_cpu_us_per_request": None
            if self.target_cpu_us_per_request is None
            else round(self.target_cpu_us_per_request, 2),
            "cpu_us_per_request": None if cpu is None else round(cpu, 2),
            "ceiling_qps": None if ceiling is None else round(ceiling, 1),
            "idle_probe": None if self.idle_probe is None else self.idle_probe.to_dict(),
            "notes": list(self.notes),
        }


async def _null_step(pool: SamplePool, rate_qps: float) -> NullStep:
    recorder = Recorder()
    dispatcher = Dispatcher(
        transport=NullTransport(pool.model), pool=pool, recorder=recorder, scenario="calibration", sample_seed=0
    )
    stop = Stop(min_duration_ns=int(NULL_STEP_S * NS), min_queries=0, max_duration_ns=int(NULL_STEP_S * NS))
    window = await dispatcher.open_loop(poisson(rate_qps, seed=1), warmup_ns=0, stop=stop, max_outstanding=0)
    await dispatcher.drain(timeout_s=5.0)
    lag = recorder.histogram(("calibration", "default"), "send_lag")
    sent = lag.get_total_count()
    duration = max(window.duration_s, 1e-9)
    offered = sum(window.offered.values())
    return NullStep(
        rate_qps=rate_qps,
        issued_qps=(offered - dispatcher.unsent_at_end()) / duration,
        offered_qps=offered / duration,
        lag_p99_ms=percentile_ns(lag, 99.0) / 1e6 if sent else math.inf,
        cpu_us_per_request=1e6 * window.cpu_s / max(sent, 1),
        cpu_pct=100.0 * window.cpu_s / duration,
    )


async def _target_burst(transport: Transport, pool: SamplePool, timeout_s: float | None) -> tuple[int, int, float]:
    """Requests, errors and client CPU seconds of a closed-loop burst against the real target."""
    deadline = time.perf_counter() + TARGET_BURST_S
    counts = [0, 0]

    async def worker(first: int) -> None:
        sample = first
        while time.perf_counter() < deadline:
            try:
                await transport.infer(pool.payload(sample % pool.count), timeout_s)
            except RequestFailed:
                counts[1] += 1
            counts[0] += 1
            sample += TARGET_IN_FLIGHT

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(TARGET_IN_FLIGHT)))
    return counts[0], counts[1], time.process_time() - cpu0


async def calibrate(
    transport: Transport, pool: SamplePool, *, lag_bound_ms: float, probe: HostProbe | None, timeout_s: float | None
) -> Calibration:
    """Measure the host at rest, the schedule's ceiling and the transport's cost (about two seconds)."""
    began = time.perf_counter()
    idle = None
    if probe is not None:
        probe.reset()
        await asyncio.sleep(IDLE_PROBE_S)
        idle = probe.report()
    steps = []
    for rate in NULL_RATES_QPS:
        step = await _null_step(pool, rate)
        if not step.passed(lag_bound_ms):  # one hiccup of the host in a quarter second is not a ceiling: retry once
            step = await _null_step(pool, rate)
        steps.append(step)
        if not step.passed(lag_bound_ms):
            break
    requests, errors, cpu_s = await _target_burst(transport, pool, timeout_s)
    notes = []
    if errors:
        notes.append(f"{errors} of {requests} calibration requests failed; the CPU cost includes their failures")
    return Calibration(
        lag_bound_ms=lag_bound_ms,
        null_steps=tuple(steps),
        target_requests=requests,
        target_errors=errors,
        target_cpu_us_per_request=1e6 * cpu_s / requests if requests else None,
        idle_probe=idle,
        seconds=time.perf_counter() - began,
        notes=tuple(notes),
    )
