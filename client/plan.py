"""What a ``tailmark run`` will do: the target, the model, and each scenario's settings.

Scenario settings come from a YAML file and from flags (flags win, over a scenario's own entry too: a
``--duration 5`` shortens every scenario of the file it fits). Settings given once apply to every
listed scenario where they mean something (``target_qps`` to the open-loop ones and Offline, say);
one that fits none of them is refused, never dropped.

YAML layout (every key optional)::

    target: 127.0.0.1:8001
    model: resnet
    defaults: {min_duration_s: 20, warmup_s: 2}      # like flags: applied where they fit
    scenarios:                                      # or a plain list of names
      - {scenario: server, target_qps: 200, latency_bound_ms: 15}
      - single-stream
      - {scenario: mixed, classes: [...]}          # traffic classes at once: client/traffic_classes.py
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tailmark.client.errors import ConfigError
from tailmark.client.settings import (
    OPEN_LOOP,
    EffectiveSettings,
    Scenario,
    ScenarioSettings,
    check_mapping,
    resolve,
)

ALL = frozenset(Scenario)
# settings that only some scenarios take (the rest apply to all)
APPLIES_TO: dict[str, frozenset[Scenario]] = {
    "target_qps": (OPEN_LOOP - {Scenario.TRACE, Scenario.MIXED}) | {Scenario.OFFLINE},
    "max_outstanding": OPEN_LOOP | {Scenario.OFFLINE},
    "latency_bound_ms": OPEN_LOOP | {Scenario.CONCURRENCY},
    "early_stopping_percentile": ALL - {Scenario.OFFLINE},
    "samples_per_query": frozenset({Scenario.MULTI_STREAM}),
    "offline_sample_count": frozenset({Scenario.OFFLINE}),
    "trace_path": frozenset({Scenario.TRACE}),
    "trace_speed": frozenset({Scenario.TRACE}),
    "resize_inputs": frozenset({Scenario.TRACE}),  # only trace arrivals carry payload sizes
    "concurrency": frozenset({Scenario.CONCURRENCY}),
    "think_time_ms": frozenset({Scenario.CONCURRENCY, Scenario.SERVER, Scenario.POISSON}),  # sessions think too
    "turns": frozenset({Scenario.CONCURRENCY, Scenario.SERVER, Scenario.POISSON}),  # multi-turn (sessions.py)
    "rate_cap_qps": frozenset({Scenario.CONCURRENCY}),
    "classes": frozenset({Scenario.MIXED}),  # traffic classes: client/traffic_classes.py
    "max_duration_s": ALL - {Scenario.MIXED},  # a mixed scenario runs min_duration_s exactly
    "max_query_count": ALL - {Scenario.MIXED},
}
RUN_KEYS = {"target", "model", "model_version", "defaults", "scenarios", "mlperf"}


@dataclass(frozen=True)
class RunPlan:
    target: str | None  # None: start the embedded server
    model: str
    model_version: str
    scenarios: tuple[EffectiveSettings, ...]
    mlperf: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def load_plan_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"settings file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"settings file {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path}: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - RUN_KEYS
    if unknown:
        raise ConfigError(f"settings file {path}: unknown keys {sorted(unknown)} (known: {sorted(RUN_KEYS)})")
    return data


def scenario_settings(
    names: list[str],
    common: dict[str, Any],
    per_scenario: list[dict[str, Any]] | None = None,
    flags: dict[str, Any] | None = None,
) -> list[ScenarioSettings]:
    """One ScenarioSettings per scenario: ``common`` where each setting fits, then that scenario's own, then
    ``flags`` (the command line's, also in ``common``): what the user typed last wins over the run file."""
    common = check_mapping({k: v for k, v in common.items() if v is not None}, source="flags")
    entries = [dict(item) for item in (per_scenario or [])] + [{"scenario": name} for name in names]
    if not entries:
        raise ConfigError("no scenario given (use --scenario, or omit --target for the built-in run)")
    parsed = [check_mapping(entry, source="scenarios") for entry in entries]
    kinds = {entry["scenario"] for entry in parsed if "scenario" in entry}
    if any("scenario" not in entry for entry in parsed):  # a scenario may repeat with other settings
        raise ConfigError("every entry under 'scenarios' needs a 'scenario' name")
    for key, value in common.items():
        if not APPLIES_TO.get(key, ALL) & kinds:
            raise ConfigError(f"{key}={value} requested; no selected scenario ({', '.join(sorted(kinds))}) takes it")
    result = []
    for entry in parsed:
        fits = {k: v for k, v in common.items() if entry["scenario"] in APPLIES_TO.get(k, ALL)}
        typed = {k: fits[k] for k, v in (flags or {}).items() if v is not None and k in fits}
        result.append(ScenarioSettings(**{**fits, **entry, **typed}))
    return result


def resolve_all(settings: list[ScenarioSettings], *, mlperf: bool) -> tuple[EffectiveSettings, ...]:
    return tuple(resolve(s, mlperf=mlperf) for s in settings)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(ScenarioSettings) if f.name != "scenario"]
