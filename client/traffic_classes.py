"""Traffic classes of a mixed run: what each class sends, where, how often, and the SLO it is judged by.

A ``mixed`` scenario in a run file lists its classes; each one has its own arrival process, and may have its
own model, endpoint, payload and SLO. ``parse_classes`` checks the run file's list (one clear error naming the
class and the key); ``class_schedule`` gives a class's arrivals; ``class_settings`` the settings its verdict
and goodput use. Running them is ``client/traffic_mix.py``.

Run file layout (docs/verdicts.md, "Mixed traffic", has the rules)::

    scenarios:
      - scenario: mixed
        min_duration_s: 20
        classes:
          - name: interactive
            arrival: {process: poisson, rate_qps: 100}
            slo: p99=25ms                      # the class's latency bound and its percentile
          - name: batch
            arrival: {process: batch, rate_qps: 0.5, sizes: "uniform:8:16", split: true}
            batch_size: 8
            slo: p90=500ms
            request_slo: 1s                    # goodput's per-request bound (default: the slo's bound)
          - name: probe
            model: "null"
            arrival: {process: fixed, rate_qps: 5}
            slo: p50=20ms
            min_query_count: 50
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tailmark.client.errors import ConfigError
from tailmark.traces import transforms
from tailmark.traces.arrival import Arrival

# Each arrival process: its required and optional parameters (traces/generators.py has the processes).
PROCESSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "poisson": (("rate_qps",), ()),
    "fixed": (("rate_qps",), ("phase_ms",)),
    "gamma": (("rate_qps", "burstiness"), ()),
    "onoff": (("rate_on_qps", "rate_off_qps", "mean_on_s", "mean_off_s"), ()),
    "batch": (("rate_qps", "sizes"), ("split",)),
    "trace": (("path",), ("speed",)),
}
ALIASES = {"fixed-interval": "fixed", "fixed_interval": "fixed", "on-off": "onoff"}
CLASS_KEYS = {
    "name", "arrival", "model", "model_version", "target", "batch_size", "shape", "input_data", "pool_size",
    "resize_inputs", "slo", "request_slo", "deadline", "min_query_count", "seed",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClassSpec:
    """One traffic class as the run file gives it; ``None`` means "the run's own" (model, target, ...)."""

    name: str
    process: str  # a key of PROCESSES
    params: tuple[tuple[str, Any], ...]  # the process's parameters, as given
    model: str | None = None
    model_version: str | None = None
    target: str | None = None  # HOST:PORT (or http://HOST:PORT with --transport http); None: the run's target
    batch_size: int | None = None  # samples per request; None: the scenario's batch_size
    shape: tuple[tuple[str, tuple[int, ...]], ...] = ()  # like --shape: variable-size inputs' shapes
    input_data: str | None = None  # like --input-data
    pool_size: int | None = None  # like --pool-size
    resize_inputs: str | None = None  # which inputs a trace's payload sizes resize
    slo_percentile: float | None = None  # the class's bound: p<slo_percentile> <= slo_bound_ms
    slo_bound_ms: float | None = None
    request_slo_ms: float | None = None  # goodput's per-request bound; None: slo_bound_ms
    deadline_ms: float | None = None  # every request's deadline (a timeout from its intended instant)
    min_query_count: int | None = None  # the verdict's floor for this class; None: the scenario's
    seed: int | None = None  # the arrival process's seed; None: from the scenario's schedule_seed and the index

    @property
    def arrival(self) -> dict[str, Any]:
        return {"process": self.process, **dict(self.params)}

    @property
    def payload_key(self) -> tuple[Any, ...]:
        """Classes with the same key share one sample pool."""
        return (self.target, self.model, self.model_version, self.shape, self.input_data, self.pool_size)

    def to_dict(self) -> dict[str, Any]:
        """The class in the run file's own keys (results.json records it; ``parse_classes`` reads it back)."""
        out: dict[str, Any] = {"name": self.name, "arrival": self.arrival}
        for key in ("model", "model_version", "target", "batch_size", "input_data", "pool_size", "resize_inputs"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.shape:
            out["shape"] = {name: list(dims) for name, dims in self.shape}
        if self.slo_bound_ms is not None:
            out["slo"] = f"p{self.slo_percentile:g}={self.slo_bound_ms:g}ms"
        for key, value in (("request_slo", self.request_slo_ms), ("deadline", self.deadline_ms)):
            if value is not None:
                out[key] = f"{value:g}ms"
        for key in ("min_query_count", "seed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def parse_classes(value: Any, source: str = "scenarios") -> tuple[ClassSpec, ...]:
    """The run file's ``classes`` list as ``ClassSpec``s; any problem is one ``ConfigError`` naming the class."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{source}: classes must be a non-empty list of traffic classes")
    specs = [_parse_class(item, f"{source}: classes[{i}]") for i, item in enumerate(value)]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{source}: class names must be unique; repeated: {', '.join(repeated)}")
    return tuple(specs)


def _parse_class(item: Any, where: str) -> ClassSpec:
    from tailmark.client.slo import parse_duration_ms, parse_slo
    from tailmark.traces.format import check_class

    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with at least name and arrival")
    unknown = set(item) - CLASS_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(CLASS_KEYS))})")
    for key in ("name", "arrival"):
        if key not in item:
            raise ConfigError(f"{where}: missing {key!r}")
    try:
        name = check_class(item["name"]) if isinstance(item["name"], str) else ""
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not name:
        raise ConfigError(f"{where}: name must be a non-empty string")
    where = f"{where} ({name})"
    process, params = _parse_arrival(item["arrival"], where)
    fields: dict[str, Any] = {}
    for key in ("model", "model_version", "target", "input_data", "resize_inputs"):
        if key in item:
            fields[key] = _typed(item[key], str, f"{where}: {key}")
    for key in ("batch_size", "pool_size", "min_query_count", "seed"):
        if key in item:
            fields[key] = _typed(item[key], int, f"{where}: {key}")
            if fields[key] < (0 if key in ("min_query_count", "seed") else 1):
                raise ConfigError(f"{where}: {key}={fields[key]} must be >= {0 if key != 'batch_size' else 1}")
    if fields.get("resize_inputs") not in (None, "auto", "tokens", "none"):
        raise ConfigError(f"{where}: resize_inputs={fields['resize_inputs']!r}; must be auto, tokens or none")
    if "shape" in item:
        fields["shape"] = _parse_shape(item["shape"], where)
    try:
        if "slo" in item:
            slo = parse_slo(_typed(item["slo"], str, f"{where}: slo"))
            fields.update(slo_percentile=slo.percentile, slo_bound_ms=slo.bound_ms)
        for key, field in (("request_slo", "request_slo_ms"), ("deadline", "deadline_ms")):
            if key in item:
                raw = item[key]  # "100ms", "0.1s" or a number of ms
                fields[field] = parse_duration_ms("" if isinstance(raw, bool) else str(raw))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    spec = ClassSpec(name=name, process=process, params=params, **fields)
    _check_process(spec, where)
    return spec


def _typed(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}={value!r}; must be {'a whole number' if kind is int else 'text'}")
    return value


def _parse_arrival(value: Any, where: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    if not isinstance(value, dict) or "process" not in value:
        raise ConfigError(f"{where}: arrival must be a mapping with a process ({', '.join(PROCESSES)})")
    process = ALIASES.get(str(value["process"]), str(value["process"]))
    if process not in PROCESSES:
        raise ConfigError(f"{where}: arrival process {value['process']!r}; known: {', '.join(PROCESSES)}")
    required, optional = PROCESSES[process]
    params = {k: v for k, v in value.items() if k != "process"}
    missing = [k for k in required if k not in params]
    unknown = sorted(set(params) - set(required) - set(optional))
    if missing or unknown:
        raise ConfigError(
            f"{where}: {process} arrivals take {', '.join(required)}"
            + (f" (optional: {', '.join(optional)})" if optional else "")
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    for key, item in params.items():
        text_keys = ("sizes", "path")
        if key == "split":
            if not isinstance(item, bool):
                raise ConfigError(f"{where}: split={item!r}; must be true or false")
        elif key in text_keys:
            if not isinstance(item, str):
                raise ConfigError(f"{where}: {key}={item!r}; must be text")
        elif isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise ConfigError(f"{where}: {key}={item!r}; must be a number")
    return process, tuple(sorted(params.items()))


def _parse_shape(value: Any, where: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, list) and v and all(isinstance(d, int) and d >= 1 for d in v)
        for k, v in value.items()
    )
    if not ok:
        raise ConfigError(f"{where}: shape must map input names to lists of dimensions >= 1, e.g. {{INPUT0: [16]}}")
    return tuple(sorted((k, tuple(v)) for k, v in value.items()))


def _check_process(spec: ClassSpec, where: str) -> None:
    """Build the class's arrivals once (lazily: no arrival is drawn) so bad parameters fail now, in one line."""
    if spec.process == "trace" and not Path(dict(spec.params)["path"]).is_file():
        raise ConfigError(f"{where}: trace file {dict(spec.params)['path']} not found")
    try:
        _arrivals(spec, seed=0)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _arrivals(spec: ClassSpec, seed: int) -> Iterator[Arrival]:
    from tailmark.traces import generators

    p = dict(spec.params)
    cls = spec.name
    match spec.process:
        case "poisson":
            return generators.poisson(p["rate_qps"], seed=seed, traffic_class=cls)
        case "fixed":
            phase = round(p.get("phase_ms", 0) * 1e6)
            return generators.fixed_interval(p["rate_qps"], traffic_class=cls, phase_ns=phase)
        case "gamma":
            return generators.gamma(p["rate_qps"], p["burstiness"], seed=seed, traffic_class=cls)
        case "onoff":
            return generators.onoff(
                p["rate_on_qps"], p["rate_off_qps"], p["mean_on_s"], p["mean_off_s"], seed=seed, traffic_class=cls
            )  # fmt: skip
        case "batch":
            split = p.get("split", False)
            return generators.batch(p["rate_qps"], p["sizes"], split=split, seed=seed, traffic_class=cls)
        case "trace":
            speed = p.get("speed", 1.0)
            if not speed > 0:
                raise ValueError(f"speed={speed} requested; must be > 0")
            return _trace(p["path"], speed, cls)
        case _:
            raise AssertionError(spec.process)


def _trace(path: str, speed: float, traffic_class: str) -> Iterator[Arrival]:
    """The trace's rows, every one in this class (its own class column is overridden), read when first pulled."""
    from tailmark.client.errors import TraceError
    from tailmark.traces.format import TraceFormatError
    from tailmark.traces.reader import read_arrivals

    try:
        yield from transforms.relabel(read_arrivals(path, speed=speed), traffic_class)
    except (TraceFormatError, OSError) as exc:
        raise TraceError(f"class {traffic_class}: {exc}") from None


def class_seed(schedule_seed: int, index: int) -> int:
    """The seed of class ``index``'s arrivals: one stream per (scenario seed, class), so repeats differ too."""
    return int(np.random.SeedSequence([schedule_seed, index]).generate_state(1, dtype=np.uint64)[0])


def class_schedule(spec: ClassSpec, index: int, schedule_seed: int, batch_size: int) -> Iterator[Arrival]:
    """Class ``index``'s arrivals (offsets from the scenario's start), with its batch size and deadline applied."""
    seed = spec.seed if spec.seed is not None else class_seed(schedule_seed, index)
    arrivals = _arrivals(spec, seed)
    if spec.deadline_ms:
        arrivals = transforms.with_deadline(arrivals, spec.deadline_ms / 1e3)
    if batch_size > 1:
        arrivals = (a._replace(batch_size=batch_size) if a.batch_size == 1 else a for a in arrivals)
    return arrivals


def class_settings(scenario: Any) -> dict[str, Any]:
    """Each class's ``EffectiveSettings``: the scenario's, with the class's bound, percentile, query floor,
    batch size and per-request SLO (what its verdict and its goodput use)."""
    out = {}
    for spec in scenario.classes or ():
        bound = spec.slo_bound_ms if spec.slo_bound_ms is not None else scenario.latency_bound_ms
        request_slo = spec.request_slo_ms or spec.slo_bound_ms or scenario.request_slo_ms
        out[spec.name] = dataclasses.replace(
            scenario,
            latency_bound_ms=bound,
            early_stopping_percentile=spec.slo_percentile or scenario.early_stopping_percentile,
            min_query_count=scenario.min_query_count if spec.min_query_count is None else spec.min_query_count,
            batch_size=spec.batch_size or scenario.batch_size,
            request_slo_ms=request_slo,
            classes=None,
        )
    return out


def all_classes_verdict(verdicts: Mapping[str, Any]) -> Any:
    """The "all" view of a mixed scenario: VALID when every class is VALID by its own SLO.

    Its checks are every class's checks, each detail prefixed with the class, so the cause (client, host,
    endpoint, length) is found by the same rule as a single class's. There is no bound or early-stopping
    estimate of "all": the classes' latencies answer to different bounds."""
    from tailmark.client.verdict import Verdict

    checks = tuple(
        dataclasses.replace(check, detail=f"{name}: {check.detail}")
        for name, verdict in verdicts.items()
        for check in verdict.checks
    )
    notes = tuple(dict.fromkeys(note for verdict in verdicts.values() for note in verdict.notes))
    return Verdict(checks, None, 0.0, notes)
