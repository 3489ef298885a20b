"""Running a mixed scenario: one open-loop dispatcher per traffic class, side by side, sharing one clock start.

Each class (client/traffic_classes.py) gets its own ``Dispatcher`` with its own transport (its endpoint and
model, answers checked against that model) and sample pool, and pulls its own arrival schedule; every one
records into the run's recorder under the scenario's name and the class's, so classes keep separate histograms
and exact counts. All classes share time 0 (a few tens of ms after the call, so every class's first requests
are built before it) and the same window: the warm-up, then exactly ``min_duration_s``; each class sends every
arrival its schedule places inside it and none after.

``open_routes`` connects and builds pools once per run, before the first scenario (a class naming another
``target`` gets its own connection with the run's transport flags); ``MixedLoad`` is what ``Run`` drives in
place of a single dispatcher.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailmark.client.dispatcher import Dispatcher, Stop, Window
from tailmark.client.errors import ConfigError, TailmarkError
from tailmark.client.recorder import Recorder
from tailmark.client.samples import SamplePool, file_pool, random_pool
from tailmark.client.settings import EffectiveSettings, Scenario
from tailmark.client.traffic_classes import ClassSpec, class_schedule, class_seed
from tailmark.client.transport import ModelInfo, Transport

START_LEAD_NS = 50_000_000  # time 0 this far ahead: every class builds its first requests before it


@dataclass(frozen=True, slots=True)
class Route:
    """Where a class's requests go (a transport that checks answers against its model) and what they carry."""

    transport: Transport
    pool: SamplePool


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """The run's own payload flags (--input-data, --shape, --pool-size), used by classes that set none."""

    input_data: Path | None
    shapes: dict[str, tuple[int, ...]]
    pool_size: int
    seed: int


class Routes:
    """Every class's ``Route``, keyed by its ``ClassSpec``; ``aclose`` closes the connections opened for them."""

    def __init__(self) -> None:
        self.by_class: dict[ClassSpec, Route] = {}
        self.opened: list[Transport] = []

    def __getitem__(self, spec: ClassSpec) -> Route:
        return self.by_class[spec]

    async def aclose(self) -> None:
        for transport in self.opened:
            await transport.aclose()
        self.opened.clear()


async def open_routes(
    scenarios: Iterable[EffectiveSettings],
    *,
    target: str,
    model: str,
    version: str,
    transport: Transport,
    connect: Callable[[str], Awaitable[Transport]],
    check: Callable[[Transport, ModelInfo], Transport],
    options: PoolOptions,
) -> Routes:
    """Routes for the classes of every mixed scenario. ``transport`` is the run's own connection to ``target``
    (unchecked); ``connect`` opens another target; ``check`` wraps a transport with the run's answer check."""
    routes = Routes()
    raw: dict[str, Transport] = {target: transport}
    infos: dict[tuple[str, str, str], tuple[Transport, ModelInfo]] = {}
    pools: dict[tuple[Any, ...], SamplePool] = {}
    try:
        for settings in scenarios:
            if settings.scenario is not Scenario.MIXED:
                continue
            for spec in settings.classes or ():
                where = spec.target or target
                if where not in raw:
                    try:
                        raw[where] = await connect(where)
                    except TailmarkError as exc:
                        raise ConfigError(f"traffic class {spec.name}: {exc}") from None
                    routes.opened.append(raw[where])
                key = (where, spec.model or model, spec.model_version if spec.model_version is not None else version)
                if key not in infos:
                    try:
                        info = await raw[where].model_info(key[1], key[2])
                    except TailmarkError as exc:  # name the class whose model or target is wrong
                        raise ConfigError(f"traffic class {spec.name}: {exc}") from None
                    infos[key] = (check(raw[where], info), info)
                checked, info = infos[key]
                own_model = key[1] == model and where == target
                pool_key = (key, spec.input_data, spec.shape, spec.pool_size)
                if pool_key not in pools:
                    pools[pool_key] = _pool(spec, info, key[2], options, own_model)
                routes.by_class[spec] = Route(checked, pools[pool_key])
    except BaseException:
        await routes.aclose()
        raise
    return routes


def _pool(spec: ClassSpec, info: ModelInfo, version: str, options: PoolOptions, own_model: bool) -> SamplePool:
    """The class's samples: its own input_data or shape, else the run's flags when it sends the run's model."""
    input_data = Path(spec.input_data) if spec.input_data else (options.input_data if own_model else None)
    if input_data is not None:
        return file_pool(info, input_data, version=version)
    shapes = dict(spec.shape) if spec.shape else (options.shapes if own_model else {})
    count = spec.pool_size or options.pool_size
    return random_pool(info, count=count, seed=options.seed, shapes=shapes, version=version)


class MixedLoad:
    """A mixed scenario's dispatchers, one per class, driven together; quacks like one ``Dispatcher`` for the
    run's progress line, its stop requests, its drain and its evidence."""

    def __init__(self, *, routes: Routes, recorder: Recorder, scenario: str, settings: EffectiveSettings) -> None:
        self.settings = settings
        self.specs = tuple(settings.classes or ())
        self.dispatchers = [self._dispatcher(routes[spec], recorder, scenario, i) for i, spec in enumerate(self.specs)]

    def _dispatcher(self, route: Route, recorder: Recorder, scenario: str, index: int) -> Dispatcher:
        resize = self.specs[index].resize_inputs or self.settings.resize_inputs
        sample_seed = class_seed(self.settings.sample_seed, index)
        return Dispatcher(
            transport=route.transport, pool=route.pool, recorder=recorder, scenario=scenario,
            sample_seed=sample_seed, resize_inputs=resize,
        )  # fmt: skip

    # what Progress.watch and the run's evidence read
    completed = property(lambda self: sum(d.completed for d in self.dispatchers))
    outstanding = property(lambda self: sum(d.outstanding for d in self.dispatchers))
    failed = property(lambda self: sum(d.failed for d in self.dispatchers))
    samples_completed = property(lambda self: sum(d.samples_completed for d in self.dispatchers))

    def request_stop(self, reason: str) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.request_stop(reason)

    def unsent_at_end(self) -> int:
        return sum(d.unsent_at_end() for d in self.dispatchers)

    async def drain(self, timeout_s: float) -> None:
        await asyncio.gather(*(d.drain(timeout_s) for d in self.dispatchers))

    async def run(self, *, warmup_ns: int, duration_ns: int) -> Window:
        """Every class's arrivals from time 0 to the warm-up plus ``duration_ns``; their windows combined."""
        s = self.settings
        start_ns = time.perf_counter_ns() + START_LEAD_NS
        loops = []
        for i, (spec, dispatcher) in enumerate(zip(self.specs, self.dispatchers, strict=True)):
            schedule = class_schedule(spec, i, s.schedule_seed, spec.batch_size or s.batch_size)
            stop = Stop(min_duration_ns=duration_ns, min_queries=0, max_duration_ns=duration_ns)
            loops.append(
                dispatcher.open_loop(
                    schedule, warmup_ns=warmup_ns, stop=stop, max_outstanding=s.max_outstanding, start_ns=start_ns
                )
            )
        window = combined(await asyncio.gather(*loops), start_ns + warmup_ns, duration_ns)
        for dispatcher in self.dispatchers:  # a class's backlog is what it had not sent when the scenario ended
            dispatcher.window.end_ns = window.end_ns
        return window


def combined(windows: list[Window], start_ns: int, duration_ns: int) -> Window:
    """One window over the classes' windows: counts summed by class, per-second counts added, the process's CPU
    over it (not a sum), and the scenario's window: ``duration_ns`` from the common start (every class sent
    each arrival its schedule put inside it), or, when interrupted, to the last intended send of any class."""
    total = Window(start_ns=start_ns, end_ns=start_ns + duration_ns)
    total.offered, total.deadlines = Counter(), Counter()
    for w in windows:
        total.offered.update(w.offered)
        total.deadlines.update(w.deadlines)
        for mine, theirs in ((total.completions_per_s, w.completions_per_s), (total.sends_per_s, w.sends_per_s)):
            mine.extend([0] * (len(theirs) - len(mine)))
            for second, count in enumerate(theirs):
                mine[second] += count
        total.cpu_s = max(total.cpu_s, w.cpu_s)
        total.held_by_cap += w.held_by_cap
        total.interrupted = total.interrupted or w.interrupted
    if total.interrupted:
        total.end_ns = max([start_ns, *(w.end_ns for w in windows)])
    return total
