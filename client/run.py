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
import time
import typing
from collections.abc import Iterator
from pathlib import Path

from tailmark.client import server_stats
from tailmark.client.compact import Compact
from tailmark.client.dispatcher import NS, Dispatcher, Stop, Window
from tailmark.client.errors import TailmarkError, TraceError
from tailmark.client.evidence import ScenarioEvidence
from tailmark.client.host_probe import HostProbe
from tailmark.client.metrics_scrape import FILE_NAME as METRICS_FILE
from tailmark.client.metrics_scrape import FORMAT as METRICS_FORMAT
from tailmark.client.metrics_scrape import Scraper, ScrapeSettings, series_doc
from tailmark.client.progress import Progress
from tailmark.client.recorder import Recorder, scenario_keys
from tailmark.client.report import write_reports
from tailmark.client.request_log import FILE_NAME as REQUEST_LOG
from tailmark.client.results import LATENCIES, ClassResult, RunResult, ScenarioResult, write_atomic
from tailmark.client.samples import SamplePool
from tailmark.client.schedule import fixed_interval, poisson
from tailmark.client.settings import OPEN_LOOP, EffectiveSettings, Scenario
from tailmark.client.shards import Shard
from tailmark.client.stability import StabilitySettings, judge
from tailmark.client.timeline import FILE_NAME as TIMELINE
from tailmark.client.timeline import Slice, in_window, read_slices
from tailmark.client.token_metrics import TokenRecorder
from tailmark.client.token_store import write as write_tokens
from tailmark.client.traffic_classes import class_settings
from tailmark.client.traffic_mix import MixedLoad, Routes
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
        stability: StabilitySettings | None = None,  # perf_analyzer's within-run check (client/stability.py)
        probe: HostProbe | None = None,
        per_request_log: bool = False,  # requests.jsonl: one line per measured request (client/request_log.py)
        metrics: ScrapeSettings | None = None,  # scrape the endpoint's Prometheus /metrics (client/metrics_scrape.py)
        routes: Routes | None = None,  # each traffic class's transport and pool (mixed scenarios: traffic_mix.py)
        shard: Shard | None = None,  # this process's share of a split load (client/shards.py)
        plots: bool = True,  # False: report.html without plots (a search's steps; `tailmark report` draws them)
        lanes: typing.Any = None,  # scenario_routes.Lanes: each scenario's own transport, pool and tokens
    ) -> None:
        if not scenarios:
            raise ValueError("a run needs at least one scenario")
        self.scenarios = scenarios
        self.transport = transport
        self.pool = pool
        self.out_dir = out_dir
        self.result = result
        self.progress = progress
        self.probe = probe  # the host-noise probe, reset at each window's start and read at its end
        request_log = out_dir / REQUEST_LOG if per_request_log else None
        self.log_start_ns = time.perf_counter_ns()  # latency.hlog's time 0: windows are placed in it
        self.recorder = Recorder(hlog_path=out_dir / TIMELINE, start_ns=self.log_start_ns, request_log_path=request_log)
        self.stability = stability
        self.plots = plots
        self._current: Dispatcher | None = None
        generative = getattr(transport, "generative", False)  # token timings; prefix counts from the prompt pool
        self.tokens = TokenRecorder(prefix_of=getattr(pool, "prefix_of", None)) if generative else None
        self.lanes = lanes
        self._sessions: dict | None = None  # multi-turn sessions of the scenario that just ran (client/sessions.py)
        self._server_stats: dict | None = None  # of the scenario that just ran
        self._evidence: ScenarioEvidence | None = None  # of the scenario that just ran
        self._seconds: dict[str, list[Slice]] = {}  # its whole seconds per latency (client/timeline.py)
        self.metrics = metrics
        self._server_metrics: dict | None = None  # of the scenario that just ran: its summary for results.json
        self._metrics_series: list[dict] = []  # every scenario's time series, for metrics.json
        self.interrupted = ""
        self.routes = routes
        self.shard = shard

    def interrupt(self, reason: str) -> None:
        """Stop after the current scenario's partial window (called from a signal handler)."""
        self.interrupted = self.interrupted or reason
        if self._current is not None:
            self._current.request_stop(reason)

    async def execute(self) -> RunResult:
        ticker = asyncio.get_running_loop().create_task(self._tick())
        try:
            names = scenario_keys(str(s.scenario) for s in self.scenarios)
            for name, settings in zip(names, self.scenarios):
                if self.interrupted:
                    break
                window = await self._run_scenario(name, settings)
                self.recorder.retire(name)  # latency.hlog: its last interval now, none after
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
        if s.scenario is Scenario.MIXED:  # one dispatcher per traffic class, side by side
            assert self.routes is not None, "a mixed scenario needs routes (traffic_mix.open_routes)"
            dispatcher: typing.Any = MixedLoad(routes=self.routes, recorder=self.recorder, scenario=name, settings=s)
        else:
            transport, pool, tokens = self._lane(s)
            dispatcher = Dispatcher(
                transport=transport, pool=pool, recorder=self.recorder, scenario=name,
                sample_seed=s.sample_seed, resize_inputs=s.resize_inputs, tokens=tokens,
            )  # fmt: skip
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
        transport, pool, _ = self._lane(s)
        stats_before = await server_stats.snapshot(transport, pool.model.name)
        scraper = Scraper(self.metrics) if self.metrics is not None else None
        if scraper is not None:
            await scraper.start()  # one scrape before the first request, then a thread every interval
        if self.shard is not None:
            await self.shard.wait_for_start()  # the first scenario starts at the shards' common instant
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(self.progress.watch(dispatcher, name, planned))
        window_opens = None
        if self.probe is not None and s.scenario is not Scenario.OFFLINE:  # Offline's window opens after its warm-up
            window_opens = loop.call_later(s.warmup_s, self.probe.reset)
        try:
            self._sessions = None
            match s.scenario:
                case Scenario.CONCURRENCY | Scenario.SERVER | Scenario.POISSON if s.turns > 1:
                    window = await self._run_sessions(dispatcher, s, warmup_ns, stop)
                case Scenario.SINGLE_STREAM | Scenario.MULTI_STREAM:
                    window = await dispatcher.closed_loop(
                        samples_per_query=s.samples_per_query,
                        warmup_ns=warmup_ns,
                        stop=stop,
                        traffic_class=DEFAULT_CLASS,
                    )
                case Scenario.CONCURRENCY:
                    window = await dispatcher.concurrent_loop(
                        concurrency=s.concurrency,
                        think_time_ns=round(s.think_time_ms * 1e6),
                        rate_cap_qps=s.rate_cap_qps,
                        batch_size=s.batch_size,
                        warmup_ns=warmup_ns,
                        stop=stop,
                        traffic_class=DEFAULT_CLASS,
                    )
                case Scenario.OFFLINE:
                    await self._warm_up(s)
                    if self.probe is not None:
                        self.probe.reset()
                    shard = self.shard
                    window = await dispatcher.offline(
                        sample_count=shard.offline_samples(s.offline_sample_count, s.batch_size)
                        if shard
                        else s.offline_sample_count,
                        batch_size=s.batch_size,
                        max_outstanding=shard.cap(s.max_outstanding) if shard else s.max_outstanding,
                        traffic_class=DEFAULT_CLASS,
                    )
                case Scenario.SERVER | Scenario.POISSON | Scenario.FIXED_INTERVAL | Scenario.TRACE:
                    if s.scenario is Scenario.TRACE:  # the trace sets the length: stop at its end or a maximum
                        stop.min_duration_ns = stop.min_queries = FOREVER_NS
                    schedule, cap = _schedule(s), s.max_outstanding
                    if self.shard is not None:  # every N-th arrival of the whole schedule, cut where it ends
                        (schedule, stop), cap = self.shard.schedule(schedule, stop, warmup_ns), self.shard.cap(cap)
                    window = await dispatcher.open_loop(schedule, warmup_ns=warmup_ns, stop=stop, max_outstanding=cap)
                case Scenario.MIXED:
                    window = await dispatcher.run(warmup_ns=warmup_ns, duration_ns=stop.min_duration_ns)
                case _:
                    typing.assert_never(s.scenario)
            await dispatcher.drain(timeout_s=(s.request_timeout_s or 60.0) + 5.0)
        finally:
            if scraper is not None:
                await scraper.stop()  # and one scrape after the last answer
            if window_opens is not None:
                window_opens.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._current = None
        self.recorder.flush()
        if self.shard is not None:
            self.shard.started(name, s, window)
        window.samples = dispatcher.samples_completed
        self._evidence = self._gather_evidence(name, s, dispatcher, window)
        if scraper is not None:
            series, self._server_metrics = series_doc(scraper, window.start_ns, window.duration_s)
            self._metrics_series.append({"scenario": name, **series})
        self._server_stats = server_stats.difference(
            stats_before, await server_stats.snapshot(transport, pool.model.name)
        )
        return window

    def _lane(self, s: EffectiveSettings) -> tuple[Transport, SamplePool, TokenRecorder | None]:
        """The transport, samples and token recorder of the scenario's endpoint (client/scenario_routes.py)."""
        if self.lanes is None:
            return self.transport, self.pool, self.tokens
        lane = self.lanes.of(s)
        return lane.transport, lane.pool, lane.tokens

    def _token_recorders(self) -> list[TokenRecorder]:
        if self.lanes is None:
            return [self.tokens] if self.tokens is not None else []
        return [lane.tokens for lane in self.lanes.all() if lane.tokens is not None]

    async def _run_sessions(self, dispatcher: Dispatcher, s: EffectiveSettings, warmup_ns: int, stop: Stop) -> Window:
        """Multi-turn sessions: N at a time (concurrency) or arriving at target_qps a second (server, poisson)."""
        from tailmark.client.sessions import SessionLoop

        if self.shard is not None:
            raise TailmarkError("--turns: multi-turn sessions are not split across shards or --workers yet")
        think_ns = round(s.think_time_ms * 1e6)
        loop = SessionLoop(dispatcher, turns=s.turns, think_time_ns=think_ns, traffic_class=DEFAULT_CLASS)
        if s.scenario is Scenario.CONCURRENCY:
            window = await loop.concurrent(sessions=s.concurrency, warmup_ns=warmup_ns, stop=stop)
            arrival = f"{s.concurrency} sessions at a time"
        else:
            window = await loop.arriving(rate_qps=s.target_qps, seed=s.schedule_seed, warmup_ns=warmup_ns, stop=stop)
            arrival = f"Poisson, {s.target_qps:g} sessions/s"
        self._sessions = loop.to_dict(arrival=arrival)
        return window

    def _gather_evidence(self, name: str, s: EffectiveSettings, dispatcher: Dispatcher, window: Window):
        """The client's and the host's side of the window just measured (see client/evidence.py)."""
        open_loop = s.scenario in OPEN_LOOP
        duration = window.duration_s
        start_ns = window.start_ns
        lag = [p99 / 1e6 for end_ns, p99 in self.recorder.send_lag_p99_per_interval(name) if end_ns > start_ns]
        in_log = ((start_ns - self.log_start_ns) / NS, (window.end_ns - self.log_start_ns) / NS)
        # the window's whole seconds of each latency, read once: the stability check's and the intervals' batches
        self._seconds = {m: in_window(read_slices(self.out_dir / TIMELINE, m, name).get(name, []), in_log)
                         for m in LATENCIES}  # fmt: skip
        steady = None
        if self.stability is not None and s.scenario is not Scenario.OFFLINE:
            steady = judge(self._seconds["intended_to_done"], in_log, self.stability)
        return ScenarioEvidence(
            client_cpu_pct=100.0 * window.cpu_s / duration if duration > 0 else None,
            offered=sum(window.offered.values()) if open_loop else None,
            unsent_at_end=dispatcher.unsent_at_end() if open_loop else None,
            held_by_cap=window.held_by_cap if open_loop else 0,
            duration_s=duration,
            probe=self.probe.report() if self.probe is not None else None,
            send_lag_p99_per_s_ms=lag,
            window_in_log_s=in_log,
            stability=steady,
        )

    async def _warm_up(self, s: EffectiveSettings) -> None:
        """Offline has no warm-up arrivals of its own: run unrecorded closed-loop requests first."""
        if s.warmup_s <= 0:
            return
        transport, pool, _ = self._lane(s)
        scratch = Dispatcher(
            transport=transport, pool=pool, recorder=Recorder(), scenario="warmup", sample_seed=s.sample_seed
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
                deadline_count=window.deadlines.get(traffic_class, 0),
                cancelled_count=window.cancelled.get(traffic_class, 0),
                tokens=tokens.stats(key) if (tokens := self._lane(s)[2]) is not None else None,
                batches={
                    m: [sl.classes.get(traffic_class, Compact.empty()) for sl in seconds]
                    for m, seconds in self._seconds.items()
                },
            )
        if s.scenario is Scenario.OFFLINE and DEFAULT_CLASS in classes:
            classes[DEFAULT_CLASS] = dataclasses.replace(classes[DEFAULT_CLASS], sample_count=window.samples)
        duration = window.duration_s
        cpu_pct = 100.0 * window.cpu_s / duration if duration > 0 else None
        return ScenarioResult(
            settings=s, classes=classes, duration_s=duration, client_cpu_pct=cpu_pct,
            throughput_per_s=tuple(window.completions_per_s), server_stats=self._server_stats,
            evidence=self._evidence, server_metrics=self._server_metrics,
            class_settings=class_settings(s) if s.scenario is Scenario.MIXED else None, sessions=self._sessions,
        )  # fmt: skip

    def _write(self) -> None:
        if self.metrics is not None:  # before the report, which plots it
            series = {"format": METRICS_FORMAT, "url": self.metrics.url, "scenarios": self._metrics_series}
            write_atomic(self.out_dir / METRICS_FILE, json.dumps(series, allow_nan=False) + "\n")
        doc = self.result.write(self.out_dir / "results.json")
        write_reports(doc, self.out_dir, plots=self.plots)
        write_atomic(self.out_dir / "histograms.json", json.dumps(self.recorder.to_dict()) + "\n")
        if recorders := self._token_recorders():  # what `tailmark merge` adds up (client/token_store.py)
            write_tokens(self.out_dir, {k: v for r in recorders for k, v in r.all().items()})


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
