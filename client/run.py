"""The composition root of a run: settings, schedule, transport, recorder and results, wired once.

``Run.execute`` goes through the scenarios in order. After each one the run directory is rewritten
atomically (results.json, summary.csv, report.html, histograms.json), and the interval log grows every
second, so an interrupted run leaves everything measured so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import typing
from collections.abc import Iterator
from pathlib import Path

from tailmark.client import server_stats
from tailmark.client.dispatcher import NS, Dispatcher, Stop, Window
from tailmark.client.errors import TailmarkError, TraceError
from tailmark.client.progress import Progress
from tailmark.client.recorder import Recorder
from tailmark.client.report import write_reports
from tailmark.client.results import ClassResult, RunResult, ScenarioResult, write_atomic
from tailmark.client.samples import SamplePool
from tailmark.client.schedule import fixed_interval, poisson
from tailmark.client.settings import EffectiveSettings, Scenario
from tailmark.client.transport import Transport
from tailmark.traces.arrival import DEFAULT_CLASS, Arrival

FOREVER_NS = 2**62


class TargetLost(TailmarkError):
    """The target stopped answering during a run; what was measured before is kept."""


class Run:
    """One run over several scenarios against one model; call ``await execute()``."""

    def __init__(
        self,
        *,
        scenarios: typing.Sequence[EffectiveSettings],
        transport: Transport,
        pool: SamplePool,
        out_dir: Path,
        result: RunResult,
        progress: Progress,
    ) -> None:
        if not scenarios:
            raise ValueError("a run needs at least one scenario")
        self.scenarios = scenarios
        self.transport = transport
        self.pool = pool
        self.out_dir = out_dir
        self.result = result
        self.progress = progress
        self.recorder = Recorder(hlog_path=out_dir / "latency.hlog")
        self._current: Dispatcher | None = None
        self._server_stats: dict | None = None  # of the scenario that just ran
        self.interrupted = ""

    def interrupt(self, reason: str) -> None:
        """Stop after the current scenario's partial window (called from a signal handler)."""
        self.interrupted = self.interrupted or reason
        if self._current is not None:
            self._current.request_stop(reason)

    async def execute(self) -> RunResult:
        ticker = asyncio.get_running_loop().create_task(self._tick())
        try:
            names = _unique_names(self.scenarios)
            for name, settings in zip(names, self.scenarios):
                if self.interrupted:
                    break
                window = await self._run_scenario(name, settings)
                self.result.scenarios.append(self._scenario_result(name, settings, window))
                self._write()
                if window.interrupted.startswith("target lost"):
                    self.result.interrupted = window.interrupted
                    self._write()
                    raise TargetLost(f"{window.interrupted} (during {name}); results so far in {self.out_dir}")
            self.result.interrupted = self.interrupted or None
            self.result.complete = not self.interrupted
            self._write()
            return self.result
        finally:
            ticker.cancel()
            self.recorder.close()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.recorder.tick()

    async def _run_scenario(self, name: str, s: EffectiveSettings) -> Window:
        dispatcher = Dispatcher(
            transport=self.transport, pool=self.pool, recorder=self.recorder, scenario=name, sample_seed=s.sample_seed
        )
        self._current = dispatcher
        if self.interrupted:
            dispatcher.request_stop(self.interrupted)
        warmup_ns = int(s.warmup_s * NS)
        stop = Stop(
            min_duration_ns=int(s.min_duration_s * NS),
            min_queries=s.min_query_count,
            max_duration_ns=int(s.max_duration_s * NS),
            max_queries=s.max_query_count,
        )
        planned = s.warmup_s + (s.max_duration_s or s.min_duration_s)
        stats_before = await server_stats.snapshot(self.transport, self.pool.model.name)
        watcher = asyncio.get_running_loop().create_task(self.progress.watch(dispatcher, name, planned))
        try:
            match s.scenario:
                case Scenario.SINGLE_STREAM | Scenario.MULTI_STREAM:
                    window = await dispatcher.closed_loop(
                        samples_per_query=s.samples_per_query,
                        warmup_ns=warmup_ns,
                        stop=stop,
                        traffic_class=DEFAULT_CLASS,
                    )
                case Scenario.OFFLINE:
                    await self._warm_up(s)
                    window = await dispatcher.offline(
                        sample_count=s.offline_sample_count,
                        batch_size=s.batch_size,
                        max_outstanding=s.max_outstanding,
                        traffic_class=DEFAULT_CLASS,
                    )
                case Scenario.SERVER | Scenario.POISSON | Scenario.FIXED_INTERVAL | Scenario.TRACE:
                    if s.scenario is Scenario.TRACE:  # the trace sets the length: stop at its end or a maximum
                        stop.min_duration_ns = stop.min_queries = FOREVER_NS
                    window = await dispatcher.open_loop(
                        _schedule(s), warmup_ns=warmup_ns, stop=stop, max_outstanding=s.max_outstanding
                    )
                case _:
                    typing.assert_never(s.scenario)
            await dispatcher.drain(timeout_s=(s.request_timeout_s or 60.0) + 5.0)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._current = None
        self.recorder.flush()
        window.samples = dispatcher.samples_completed
        self._server_stats = server_stats.difference(
            stats_before, await server_stats.snapshot(self.transport, self.pool.model.name)
        )
        return window

    async def _warm_up(self, s: EffectiveSettings) -> None:
        """Offline has no warm-up arrivals of its own: run unrecorded closed-loop requests first."""
        if s.warmup_s <= 0:
            return
        scratch = Dispatcher(
            transport=self.transport, pool=self.pool, recorder=Recorder(), scenario="warmup", sample_seed=s.sample_seed
        )
        stop = Stop(min_duration_ns=0, min_queries=0, max_duration_ns=1)
        await scratch.closed_loop(samples_per_query=1, warmup_ns=int(s.warmup_s * NS), stop=stop, traffic_class="w")

    def _scenario_result(self, name: str, s: EffectiveSettings, window: Window) -> ScenarioResult:
        classes = {}
        for key in self.recorder.keys():
            scenario, traffic_class = key
            if scenario != name:
                continue
            classes[traffic_class] = ClassResult(
                traffic_class=traffic_class,
                intended_to_done=self.recorder.histogram(key, "intended_to_done"),
                sent_to_done=self.recorder.histogram(key, "sent_to_done"),
                send_lag=self.recorder.histogram(key, "send_lag"),
                errors=dict(self.recorder.errors(key)),
                overflow_count=self.recorder.overflow(key)["intended_to_done"],
                sample_count=None,
                offered_count=window.offered.get(traffic_class, 0),
            )
        if s.scenario is Scenario.OFFLINE and DEFAULT_CLASS in classes:
            classes[DEFAULT_CLASS] = dataclasses.replace(classes[DEFAULT_CLASS], sample_count=window.samples)
        duration = window.duration_s
        cpu_pct = 100.0 * window.cpu_s / duration if duration > 0 else None
        return ScenarioResult(
            settings=s, classes=classes, duration_s=duration, client_cpu_pct=cpu_pct,
            throughput_per_s=tuple(window.completions_per_s), server_stats=self._server_stats,
        )  # fmt: skip

    def _write(self) -> None:
        doc = self.result.write(self.out_dir / "results.json")
        write_reports(doc, self.out_dir)
        write_atomic(self.out_dir / "histograms.json", json.dumps(self.recorder.to_dict()) + "\n")


def _unique_names(scenarios: typing.Sequence[EffectiveSettings]) -> list[str]:
    """Recorder keys: the scenario's name, numbered when a scenario appears more than once."""
    seen: dict[str, int] = {}
    names = []
    for s in scenarios:
        seen[s.scenario] = seen.get(s.scenario, 0) + 1
        names.append(str(s.scenario) if seen[s.scenario] == 1 else f"{s.scenario}-{seen[s.scenario]}")
    return names


def _schedule(s: EffectiveSettings) -> Iterator[Arrival]:
    match s.scenario:
        case Scenario.SERVER | Scenario.POISSON:
            schedule = poisson(s.target_qps, seed=s.schedule_seed)
        case Scenario.FIXED_INTERVAL:
            schedule = fixed_interval(s.target_qps)
        case Scenario.TRACE:
            schedule = _trace(s)
        case _:
            raise AssertionError(f"{s.scenario} is not open loop")
    if s.batch_size > 1:
        return (a._replace(batch_size=s.batch_size) if a.batch_size == 1 else a for a in schedule)
    return schedule


def _trace(s: EffectiveSettings) -> Iterator[Arrival]:
    from tailmark.traces.format import TraceFormatError
    from tailmark.traces.reader import read_arrivals

    try:
        reader = read_arrivals(s.trace_path, speed=s.trace_speed)
    except (TraceFormatError, OSError) as exc:
        raise TraceError(str(exc)) from None

    def arrivals() -> Iterator[Arrival]:
        try:
            yield from reader
        except TraceFormatError as exc:
            raise TraceError(str(exc)) from None

    return arrivals()
