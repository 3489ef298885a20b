"""Scenario settings: what the user asked for, and the effective settings a run uses.

``ScenarioSettings`` holds a request: every field left at ``None`` means "the scenario's default".
``resolve`` is the one place that fills those defaults (quick ones for everyday runs, or the MLPerf
floors with ``mlperf=True``) and refuses invalid combinations with a ``ConfigError``. Nothing is ever
silently fixed: a bad value is an error that names the setting, the value and the rule.

Example::

    >>> eff = resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=200), mlperf=False)
    >>> eff.min_duration_s, eff.latency_bound_ms, eff.requested.min_duration_s
    (10.0, 10.0, None)
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tailmark.client.errors import ConfigError


class Scenario(enum.StrEnum):
    SINGLE_STREAM = "single-stream"  # closed loop, one query in flight
    MULTI_STREAM = "multi-stream"  # closed loop, samples_per_query in flight, latency of the last
    SERVER = "server"  # MLPerf Server: Poisson arrivals, p99 bound, early stopping
    OFFLINE = "offline"  # all samples at t=0, throughput only
    POISSON = "poisson"  # open-loop Poisson without MLPerf's bound (a bound is optional)
    FIXED_INTERVAL = "fixed-interval"  # open loop, constant gaps
    TRACE = "trace"  # open loop, arrival times from a trace file
    CONCURRENCY = "concurrency"  # closed loop, N requests in flight (perf_analyzer's concurrency mode)
    MIXED = "mixed"  # open loop, several traffic classes at once, each its own arrivals and SLO (traffic_classes.py)


# Closed loop: the next request leaves when one completes, so intended = sent and latency is sent -> done.
CLOSED_LOOP = frozenset({Scenario.SINGLE_STREAM, Scenario.MULTI_STREAM, Scenario.CONCURRENCY})
OPEN_LOOP = frozenset({Scenario.SERVER, Scenario.POISSON, Scenario.FIXED_INTERVAL, Scenario.TRACE, Scenario.MIXED})

# The scenario's own endpoint: left as requested by ``resolve``, filled with the run's by scenario_routes.fill
ENDPOINT_FIELDS = ("transport", "model", "model_version", "target", "input_tokens", "output_tokens")

# Which inputs a trace's payload size (token count) resizes; the rule is samples.resized_inputs.
RESIZE_CHOICES = ("auto", "tokens", "none")

# The official LoadGen seeds (mlperf.conf): schedule_rng_seed and sample_index_rng_seed.
OFFICIAL_SCHEDULE_SEED = 16159082839903944936
OFFICIAL_SAMPLE_SEED = 2747215439041700203


@dataclass(frozen=True, slots=True)
class ScenarioSettings:
    """One scenario's settings as requested; ``None`` means "use the scenario default"."""

    scenario: Scenario = Scenario.SERVER

    # --- offered load (open loop; Offline uses target_qps as its expected rate) ---
    target_qps: float | None = None  # arrivals per second
    max_outstanding: int | None = None  # in-flight cap; 0: unlimited
    trace_path: str | None = None  # trace scenario only
    trace_speed: float | None = None  # >1 replays the trace faster

    # --- query shape ---
    samples_per_query: int | None = None  # MultiStream 8, else 1
    batch_size: int | None = None  # samples in one request (leading dimension)
    offline_sample_count: int | None = None  # Offline: samples in the one query
    # Which inputs a trace row's payload size (its token count) resizes. "auto" (default): the inputs
    # that take tokens, i.e. that have a variable (-1) dimension and an integer or BYTES datatype (token
    # ids, text); a model of images, audio or embeddings keeps its own shapes. "tokens": every input with a
    # variable dimension. "none": payload sizes are ignored. Only trace arrivals carry payload sizes.
    resize_inputs: str | None = None

    # --- closed loop of N in flight (concurrency scenario only) ---
    concurrency: int | None = None  # requests in flight; each is sent when one completes; default 1
    think_time_ms: float | None = None  # pause after a completion before that slot sends again; 0: none
    rate_cap_qps: float | None = None  # the loop never sends faster than this (a leaky bucket); 0: no cap
    # multi-turn sessions (client/sessions.py): turns per session, each after the last answer + think_time_ms;
    # concurrency: N sessions at a time; server/poisson: sessions arrive at target_qps. 1: single requests
    turns: int | None = None

    # --- latency target ---
    latency_bound_ms: float | None = None  # Server 10; 0: no bound (poisson, fixed-interval, trace)
    early_stopping_percentile: float | None = None  # SingleStream 90, MultiStream/Server 99; 0: none (Offline)

    # --- generative endpoints (client/token_verdict.py, client/token_metrics.py); 0: none ---
    ttft_bound_ms: float | None = None  # LoadGen's LLM constraint: the percentile of TTFT (from intended)
    tpot_bound_ms: float | None = None  # ... and of time per output token; either one drops Server's e2e default
    slo_ttft_ms: float | None = None  # token goodput: a request is good when it meets every SLO given
    slo_tpot_ms: float | None = None
    slo_e2e_ms: float | None = None

    # --- duration ---
    min_duration_s: float | None = None
    max_duration_s: float | None = None  # 0: unlimited
    min_query_count: int | None = None  # Offline: minimum sample count
    max_query_count: int | None = None  # 0: unlimited
    warmup_s: float | None = None  # untimed, before the measured window

    # --- client validity ---
    send_lag_bound_ms: float | None = None  # p99 of sent - intended above this: client-bound
    client_cpu_bound_pct: float | None = None  # client process CPU, % of one core

    # --- seeds: one per random dimension ---
    schedule_seed: int | None = None
    sample_seed: int | None = None

    # --- requests ---
    request_timeout_s: float | None = None  # 0: no deadline
    # goodput's per-request SLO (client/goodput.py): intended -> done at most this; default the latency bound; 0: none
    request_slo_ms: float | None = None

    # --- mixed scenario only: its traffic classes (client/traffic_classes.ClassSpec), from the run file ---
    classes: tuple[Any, ...] | None = None

    # --- the scenario's own endpoint (client/scenario_routes.py); None: the run's. Effective settings name the
    # transport and model every scenario used; the token lengths only for the generative transports ---
    transport: str | None = None  # h2, grpc, http, openai, grpc-stream
    model: str | None = None
    model_version: str | None = None
    target: str | None = None  # None: the run's (the built-in server: its gRPC or HTTP port, as the transport needs)
    input_tokens: int | None = None  # generative transports: prompt and max_tokens lengths (default: the run's)
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class EffectiveSettings(ScenarioSettings):
    """Settings a run uses: every field filled. ``requested`` keeps what the user asked for."""

    requested: ScenarioSettings = field(default_factory=ScenarioSettings)
    mlperf: bool = False

    @property
    def is_open_loop(self) -> bool:
        return self.scenario in OPEN_LOOP

    @property
    def latency_from(self) -> str:
        """Where the headline latency starts: "sent" in a closed loop (intended = sent by definition),
        "intended" in an open loop and Offline (every sample intended at the start). Multi-turn sessions are marked
        "sent" too: every turn after the first is intended at the previous answer + think time (client/sessions.py)."""
        return "sent" if self.scenario in CLOSED_LOOP or (self.turns or 1) > 1 else "intended"

    def to_dict(self) -> dict[str, Any]:
        """Effective and requested values, JSON-ready (None in ``requested``: not given), and where the
        scenario's latency starts (``latency_from``)."""
        names = [f.name for f in dataclasses.fields(ScenarioSettings)]
        return {
            "mlperf": self.mlperf,
            "latency_from": self.latency_from,
            "effective": {n: _plain(getattr(self, n)) for n in names},
            "requested": {n: _plain(getattr(self.requested, n)) for n in names},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):  # a mixed scenario's classes
        return [item.to_dict() for item in value]
    return str(value) if isinstance(value, Scenario) else value


# Quick defaults: a run of each scenario takes ~10-20 s. --mlperf: the official floors (loadgen.md §1, §3).
_QUICK = {"min_duration_s": 10.0, "warmup_s": 2.0}
_MLPERF = {"min_duration_s": 600.0, "warmup_s": 10.0}
_MIN_QUERIES = {  # (quick, mlperf); Offline counts samples
    Scenario.SINGLE_STREAM: (100, 100),
    Scenario.MULTI_STREAM: (662, 662),
    Scenario.SERVER: (100, 100),
    Scenario.OFFLINE: (1024, 24576),
    Scenario.POISSON: (100, 100),
    Scenario.FIXED_INTERVAL: (100, 100),
    Scenario.TRACE: (100, 100),
    Scenario.CONCURRENCY: (100, 100),
    Scenario.MIXED: (100, 100),  # per class
}
_OFFLINE_SLACK = 1.1  # LoadGen sizes the Offline query at 1.1 x min_duration x expected qps


def resolve(requested: ScenarioSettings, *, mlperf: bool) -> EffectiveSettings:
    """Fill the scenario's defaults and refuse invalid combinations (``ConfigError``)."""
    _check_ranges(requested)
    _check_scenario_fit(requested)
    if mlperf:
        _check_mlperf(requested)
    r, sc = requested, requested.scenario
    floors = _MLPERF if mlperf else _QUICK

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    token_bound = bool(r.ttft_bound_ms or r.tpot_bound_ms)  # LoadGen's LLMs: TTFT/TPOT replace the e2e bound
    min_duration_s = float(pick(r.min_duration_s, floors["min_duration_s"]))
    min_query_count = int(pick(r.min_query_count, _MIN_QUERIES[sc][1 if mlperf else 0]))
    target_qps = float(pick(r.target_qps, 0.0 if sc in CLOSED_LOOP | {Scenario.TRACE, Scenario.MIXED} else 100.0))
    latency_bound_ms = float(pick(r.latency_bound_ms, 10.0 if sc is Scenario.SERVER and not token_bound else 0.0))
    offline_samples = 0
    if sc is Scenario.OFFLINE:
        sized = int(_OFFLINE_SLACK * min_duration_s * target_qps)
        offline_samples = int(pick(r.offline_sample_count, max(min_query_count, sized)))
    eff = EffectiveSettings(
        scenario=sc,
        target_qps=target_qps,
        max_outstanding=int(pick(r.max_outstanding, 128 if sc is Scenario.OFFLINE else 0)),
        trace_path=r.trace_path or "",
        trace_speed=float(pick(r.trace_speed, 1.0)),
        samples_per_query=int(pick(r.samples_per_query, 8 if sc is Scenario.MULTI_STREAM else 1)),
        batch_size=int(pick(r.batch_size, 1)),
        offline_sample_count=offline_samples,
        resize_inputs=pick(r.resize_inputs, "auto"),
        concurrency=int(pick(r.concurrency, 1 if sc is Scenario.CONCURRENCY else 0)),
        think_time_ms=float(pick(r.think_time_ms, 0.0)),
        rate_cap_qps=float(pick(r.rate_cap_qps, 0.0)),
        turns=int(pick(r.turns, 1)),
        latency_bound_ms=latency_bound_ms,
        early_stopping_percentile=float(pick(r.early_stopping_percentile, _default_percentile(sc))),
        ttft_bound_ms=float(pick(r.ttft_bound_ms, 0.0)),
        tpot_bound_ms=float(pick(r.tpot_bound_ms, 0.0)),
        slo_ttft_ms=float(pick(r.slo_ttft_ms, 0.0)),
        slo_tpot_ms=float(pick(r.slo_tpot_ms, 0.0)),
        slo_e2e_ms=float(pick(r.slo_e2e_ms, 0.0)),
        min_duration_s=min_duration_s,
        max_duration_s=float(pick(r.max_duration_s, 0.0)),
        min_query_count=min_query_count,
        max_query_count=int(pick(r.max_query_count, 0)),
        warmup_s=float(pick(r.warmup_s, floors["warmup_s"])),
        send_lag_bound_ms=float(pick(r.send_lag_bound_ms, 1.0)),
        client_cpu_bound_pct=float(pick(r.client_cpu_bound_pct, 90.0)),
        schedule_seed=int(pick(r.schedule_seed, OFFICIAL_SCHEDULE_SEED)),
        sample_seed=int(pick(r.sample_seed, OFFICIAL_SAMPLE_SEED)),
        request_timeout_s=float(pick(r.request_timeout_s, 30.0)),
        request_slo_ms=float(pick(r.request_slo_ms, latency_bound_ms)),
        classes=r.classes,
        transport=r.transport,  # filled with the run's by scenario_routes.fill (it knows the run's flags)
        model=r.model,
        model_version=r.model_version,
        target=r.target,
        input_tokens=r.input_tokens,
        output_tokens=r.output_tokens,
        requested=requested,
        mlperf=mlperf,
    )
    _check_limits(eff)
    return eff


def _default_percentile(scenario: Scenario) -> float:
    match scenario:
        case Scenario.SINGLE_STREAM:
            return 90.0
        case Scenario.OFFLINE:
            return 0.0
        case (
            Scenario.MULTI_STREAM
            | Scenario.SERVER
            | Scenario.POISSON
            | Scenario.FIXED_INTERVAL
            | Scenario.TRACE
            | Scenario.CONCURRENCY
            | Scenario.MIXED
        ):
            return 99.0
        case _:
            typing.assert_never(scenario)


def _refuse(name: str, value: Any, rule: str) -> typing.NoReturn:
    raise ConfigError(f"{name}={value} requested; {rule}")


_POSITIVE = ("target_qps", "trace_speed", "send_lag_bound_ms", "client_cpu_bound_pct")
_AT_LEAST_ONE = ("samples_per_query", "batch_size", "offline_sample_count", "concurrency", "turns", "input_tokens",
                 "output_tokens")  # fmt: skip
_NON_NEGATIVE = (
    "max_outstanding", "latency_bound_ms", "min_duration_s", "max_duration_s", "min_query_count",
    "max_query_count", "warmup_s", "schedule_seed", "sample_seed", "request_timeout_s", "think_time_ms",
    "ttft_bound_ms", "tpot_bound_ms", "slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms",
    "rate_cap_qps", "request_slo_ms",
)  # fmt: skip


def _check_ranges(r: ScenarioSettings) -> None:
    if not isinstance(r.scenario, Scenario):
        _refuse("scenario", r.scenario, f"must be one of {', '.join(Scenario)}")
    for name in _POSITIVE:
        value = getattr(r, name)
        if value is not None and not value > 0:
            _refuse(name, value, "must be > 0")
    for name in _AT_LEAST_ONE:
        value = getattr(r, name)
        if value is not None and value < 1:
            _refuse(name, value, "must be >= 1")
    for name in _NON_NEGATIVE:
        value = getattr(r, name)
        if value is not None and not value >= 0:
            _refuse(name, value, "must be >= 0")
    if r.resize_inputs is not None and r.resize_inputs not in RESIZE_CHOICES:
        _refuse("resize_inputs", r.resize_inputs, f"must be one of {', '.join(RESIZE_CHOICES)}")
    p = r.early_stopping_percentile
    if p is not None and not 0 < p < 100:
        _refuse("early_stopping_percentile", p, "must be > 0 and < 100")


def _check_scenario_fit(r: ScenarioSettings) -> None:
    """Refuse settings that mean nothing in the requested scenario (instead of ignoring them)."""
    sc = r.scenario
    if sc in CLOSED_LOOP:
        for name in ("target_qps", "max_outstanding"):
            if getattr(r, name) is not None:
                _refuse(name, getattr(r, name), f"scenario {sc} is closed loop; it has no offered rate or cap")
    sessions = (r.turns or 1) > 1  # multi-turn sessions also think between turns under server and poisson
    if sessions and sc not in (Scenario.CONCURRENCY, Scenario.SERVER, Scenario.POISSON):
        _refuse("turns", r.turns, f"multi-turn sessions run in the concurrency, server or poisson scenario, not {sc}")
    if sc is not Scenario.CONCURRENCY:
        for name in ("concurrency", "rate_cap_qps") + (() if sessions else ("think_time_ms",)):
            if getattr(r, name) is not None:
                _refuse(name, getattr(r, name), f"only used by the concurrency scenario, not {sc}")
    # a concurrency run may take a bound (judged on sent -> done); single- and multi-stream report a percentile
    bound_free = (CLOSED_LOOP - {Scenario.CONCURRENCY}) | {Scenario.OFFLINE}
    if sc in bound_free and r.latency_bound_ms is not None:
        _refuse("latency_bound_ms", r.latency_bound_ms, f"scenario {sc} has no latency bound")
    token_bound = bool(r.ttft_bound_ms or r.tpot_bound_ms)
    if sc is Scenario.SERVER and r.latency_bound_ms is not None and r.latency_bound_ms == 0 and not token_bound:
        _refuse("latency_bound_ms", 0, "the server scenario needs a latency bound > 0")
    if sc is Scenario.OFFLINE and r.early_stopping_percentile is not None:
        _refuse("early_stopping_percentile", r.early_stopping_percentile, "offline has no tail percentile")
    if sc is not Scenario.MULTI_STREAM and r.samples_per_query not in (None, 1):
        _refuse("samples_per_query", r.samples_per_query, "only multi-stream sends more than one sample per query")
    if sc is not Scenario.OFFLINE and r.offline_sample_count is not None:
        _refuse("offline_sample_count", r.offline_sample_count, f"only used by offline, not {sc}")
    if sc is Scenario.MIXED and not r.classes:
        raise ConfigError("classes not set; the mixed scenario needs its traffic classes (listed in a run file)")
    if sc is not Scenario.MIXED and r.classes:
        _refuse("classes", "[...]", f"only used by the mixed scenario, not {sc}")
    if sc is Scenario.MIXED:  # each class has its own rate; the scenario runs for min_duration_s exactly
        for name in ("target_qps", "max_duration_s", "max_query_count"):
            if getattr(r, name) is not None:
                _refuse(name, getattr(r, name), "the mixed scenario takes rates per class and runs min_duration_s")
    if sc is Scenario.TRACE:
        if not r.trace_path:
            raise ConfigError("trace_path not set; the trace scenario needs a trace file")
        if r.target_qps is not None:
            _refuse("target_qps", r.target_qps, "the trace sets the arrival times (scale them with trace_speed)")
    else:
        for name in ("trace_path", "trace_speed"):
            if getattr(r, name) is not None:
                _refuse(name, getattr(r, name), f"only used by the trace scenario, not {sc}")


def _check_mlperf(r: ScenarioSettings) -> None:
    """--mlperf runs may raise the official floors but never lower them, and use the official seeds."""
    sc = r.scenario
    if sc is Scenario.MIXED:
        raise ConfigError("--mlperf: mixed traffic is not an MLPerf scenario")
    if ((sc in OPEN_LOOP and sc is not Scenario.TRACE) or sc is Scenario.OFFLINE) and r.target_qps is None:
        raise ConfigError(f"target_qps not set; an --mlperf {sc} run needs an explicit target_qps")
    if r.min_duration_s is not None and r.min_duration_s < _MLPERF["min_duration_s"]:
        _refuse("min_duration_s", r.min_duration_s, f"--mlperf needs >= {_MLPERF['min_duration_s']:g}")
    floor = _MIN_QUERIES[sc][1]
    if r.min_query_count is not None and r.min_query_count < floor:
        _refuse("min_query_count", r.min_query_count, f"--mlperf {sc} needs >= {floor}")
    for name, official in (("schedule_seed", OFFICIAL_SCHEDULE_SEED), ("sample_seed", OFFICIAL_SAMPLE_SEED)):
        value = getattr(r, name)
        if value is not None and value != official:
            _refuse(name, value, f"--mlperf runs use the official seed {official}")


def _check_limits(eff: EffectiveSettings) -> None:
    if eff.max_duration_s and eff.max_duration_s < eff.min_duration_s:
        _refuse("max_duration_s", eff.max_duration_s, f"must be 0 or >= min_duration_s={eff.min_duration_s:g}")
    if eff.max_query_count and eff.max_query_count < eff.min_query_count:
        _refuse("max_query_count", eff.max_query_count, f"must be 0 or >= min_query_count={eff.min_query_count}")
    if eff.scenario is Scenario.OFFLINE and eff.offline_sample_count < eff.min_query_count:
        _refuse("offline_sample_count", eff.offline_sample_count, f"must be >= min_query_count={eff.min_query_count}")


# --- settings files ---


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of settings, checking every key and value type; unknown keys are refused."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"settings file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"settings file {path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path}: expected a mapping of settings, got {type(data).__name__}")
    return check_mapping(data, source=str(path))


def check_mapping(data: dict[str, Any], *, source: str = "settings") -> dict[str, Any]:
    """Validate keys and value types against ``ScenarioSettings``; returns a copy with ``scenario`` parsed."""
    hints = typing.get_type_hints(ScenarioSettings)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{source}: unknown setting {key!r} (known: {known})")
        if key == "classes" and value is not None:  # a mixed scenario's traffic classes
            from tailmark.client.traffic_classes import parse_classes

            out[key] = parse_classes(value, source)
            continue
        out[key] = _check_type(key, value, hints[key], source)
    return out


def settings_from_mapping(data: dict[str, Any]) -> ScenarioSettings:
    """A ``ScenarioSettings`` from a mapping (e.g. ``load_yaml`` merged with CLI flags)."""
    return ScenarioSettings(**check_mapping(data))


def _check_type(key: str, value: Any, hint: Any, source: str) -> Any:
    if value is None:
        return None
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if Scenario in allowed:
        try:
            return Scenario(value)
        except ValueError:
            raise ConfigError(f"{source}: scenario={value} requested; must be one of {', '.join(Scenario)}") from None
    if isinstance(value, bool):  # bool is an int subclass; no setting here is a flag
        raise ConfigError(f"{source}: {key}={value} requested; must be a number or text, not true/false")
    if float in allowed and isinstance(value, int | float):
        return float(value)
    if int in allowed and isinstance(value, int):
        return value
    if str in allowed and isinstance(value, str):
        return value
    wanted = " or ".join(t.__name__ for t in allowed if t is not type(None))
    raise ConfigError(f"{source}: {key}={value!r} requested; must be {wanted}")
