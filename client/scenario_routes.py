"""Per-scenario endpoints: a scenario of a run may name its own transport, model, target and token lengths.

A run file's scenario entry (or the built-in run's generative one) may set ``transport``, ``model``,
``model_version``, ``target``, ``input_tokens`` and ``output_tokens``; what it leaves out is the run's (flags and
the file's top level). ``fill`` writes the run's values into every scenario's effective settings, so results.json
names the transport and model of each scenario. ``open_lanes`` then connects once per distinct endpoint, before
the first scenario, and builds each one's samples (a prompt pool for the generative transports, as
client/generative_cli.py builds it) and token recorder; ``Run`` gives each scenario its own lane's dispatcher,
server statistics and tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tailmark.client.embedded import HTTP_TRANSPORTS  # served on the built-in server's --http-port
from tailmark.client.errors import ConfigError
from tailmark.client.settings import EffectiveSettings, Scenario

TRANSPORTS = ("h2", "grpc", "http", "openai", "grpc-stream")  # as client/cli.py TRANSPORTS
GENERATIVE = ("openai", "grpc-stream")
# The built-in run's generative scenario, after the ResNet ones: the default repository's tiny-lm (a real
# Transformer's compute, seeded random weights) streamed over the OpenAI routes, 4 at a time. 8 prompt tokens are
# ~26 bytes (its tokens) and 16 answer bytes fit its 64-byte context. No bound is set: its TTFT/ITL/TPOT are
# reported, not judged; p90 (as single-stream) instead of p99 because ~10 s at 13-20 requests/s on 2 cores gives
# 130-200 requests, too few for p99's early-stopping estimate (662) but enough for p90's (64).
EMBEDDED_GENERATIVE = {"scenario": "concurrency", "transport": "openai", "model": "tiny-lm", "concurrency": 4,
                       "input_tokens": 8, "output_tokens": 16, "early_stopping_percentile": 90.0}  # fmt: skip
TOKEN_FIELDS = ("ttft_bound_ms", "tpot_bound_ms", "slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms")


def fill(scenarios: Sequence[EffectiveSettings], args: argparse.Namespace, model: str, model_version: str):
    """Each scenario with the run's transport, model and version where it names none (and, for a generative
    transport, the run's --input-tokens/--output-tokens); ConfigError for an endpoint the scenario cannot use."""
    run_transport = getattr(args, "transport", "h2")
    filled = []
    for s in scenarios:
        transport = s.transport or run_transport
        where = f"scenario {s.scenario}"
        if transport not in TRANSPORTS:
            raise ConfigError(f"{where}: transport={transport} requested; must be one of {', '.join(TRANSPORTS)}")
        own = s.model is not None
        if s.scenario is Scenario.MIXED and (s.transport, s.model, s.target) != (None, None, None):
            raise ConfigError(f"{where}: a mixed scenario's classes name their own model and target, not the scenario")
        generative = transport in GENERATIVE
        if not generative:
            for name in ("input_tokens", "output_tokens", *TOKEN_FIELDS):
                if getattr(s, name):
                    raise ConfigError(f"{where}: {name} needs transport openai or grpc-stream, not {transport}")
        filled.append(
            dataclasses.replace(
                s,
                transport=transport,
                model=s.model or model,
                model_version=s.model_version if s.model_version is not None else ("" if own else model_version),
                input_tokens=(s.input_tokens or getattr(args, "input_tokens", 128)) if generative else None,
                output_tokens=(s.output_tokens or getattr(args, "output_tokens", 64)) if generative else None,
            )
        )
    return tuple(filled)


def lane_key(s: EffectiveSettings) -> tuple:
    """Scenarios with the same key share one connection and one sample pool."""
    return (s.transport, s.model, s.model_version, s.target, s.input_tokens, s.output_tokens)


def needs_http(scenarios: Sequence[EffectiveSettings]) -> bool:
    """Whether the built-in server must also listen for HTTP (--http-port)."""
    return any(s.transport in HTTP_TRANSPORTS for s in scenarios)


@dataclass
class Lane:
    """One endpoint of a run: its connection (checked unless generative), model, samples and token timings."""

    kind: str  # the transport's name
    address: str  # where it connected
    raw: Any  # the transport as connected (traffic classes wrap it themselves)
    transport: Any  # raw, its answers checked (KServe transports) or not (generative ones)
    info: Any  # ModelInfo
    pool: Any  # SamplePool or a prompt pool
    tokens: Any  # TokenRecorder for generative answers, else None
    args: argparse.Namespace  # the run's flags with this lane's transport and lengths


class Lanes:
    """Every lane of a run, opened in scenario order; ``primary`` is the first scenario's."""

    def __init__(self) -> None:
        self.by_key: dict[tuple, Lane] = {}
        self.primary: Lane | None = None

    def of(self, s: EffectiveSettings) -> Lane:
        return self.by_key[lane_key(s)]

    def all(self) -> list[Lane]:
        return list(self.by_key.values())

    async def aclose(self) -> None:
        for lane in self.all():
            await lane.raw.aclose()


async def open_lanes(
    scenarios: Sequence[EffectiveSettings],
    args: argparse.Namespace,
    *,
    target_for: Callable[[str], str],
    connect: Callable[[argparse.Namespace, str, float], Awaitable[Any]],
    shapes: dict[str, tuple[int, ...]],
) -> Lanes:
    """Connect once per distinct endpoint of ``scenarios`` (``target_for(transport)``: the run's address for it).
    On a failure the lanes already open are closed and the error goes on."""
    from tailmark.client.response_check import checked
    from tailmark.client.samples import file_pool, random_pool
    from tailmark.client.token_metrics import TokenRecorder

    lanes = Lanes()
    try:
        for s in scenarios:
            key = lane_key(s)
            if key in lanes.by_key:
                continue
            own = argparse.Namespace(**{**vars(args), "transport": s.transport})
            if s.transport in GENERATIVE:
                own.input_tokens, own.output_tokens = s.input_tokens, s.output_tokens
            address = s.target or target_for(s.transport)
            raw = await connect(own, address, s.request_timeout_s)
            lane = Lane(kind=s.transport, address=address, raw=raw, transport=raw, info=None, pool=None, tokens=None,
                        args=own)  # fmt: skip
            lanes.by_key[key] = lane  # closed with the others from here on
            lane.info = info = await raw.model_info(s.model, s.model_version)
            if s.transport in GENERATIVE:  # a generative answer is checked as it is read
                from tailmark.client.generative_cli import prompt_pool
                from tailmark.client.prompts import corpus

                lane.pool = prompt_pool(own, info, s.sample_seed)
                corpus()  # read the prompts' text now (about 1 s on a busy host), not in the scenario's warm-up
                lane.tokens = TokenRecorder(prefix_of=getattr(lane.pool, "prefix_of", None))
            else:
                lane.transport = checked(raw, info, args.validate)
                if args.input_data:
                    lane.pool = file_pool(info, args.input_data, version=s.model_version)
                else:
                    lane.pool = random_pool(
                        info, count=args.pool_size, seed=s.sample_seed, shapes=shapes, version=s.model_version
                    )
            lanes.primary = lanes.primary or lane
    except BaseException:
        await lanes.aclose()
        raise
    return lanes


async def describe(lanes: Lanes, notes: Callable[[Any, Any], Awaitable[list[str]]]) -> list[dict[str, Any]]:
    """results.json's ``environment.endpoints``: each lane's transport, address, model and what its endpoint
    said about itself (``notes``: client/control.endpoint_notes), in scenario order."""
    return [{"transport": lane.kind, "address": lane.address, "model": lane.info.name, "version": lane.info.version,
             "notes": await notes(lane.raw, lane.info)} for lane in lanes.all()]  # fmt: skip


def endpoint_notes(doc: dict[str, Any]) -> list[str]:
    """The report's "endpoint: ..." lines: the target's notes, or with several endpoints each one's, named."""
    env = doc["environment"]
    if len(env.get("endpoints") or []) > 1:
        return [f"endpoint {e['transport']} {e['address']} ({e['model']}): {note}"
                for e in env["endpoints"] for note in e.get("notes") or []]  # fmt: skip
    return [f"endpoint: {note}" for note in (env.get("target") or {}).get("notes") or []]


def endpoint_lines(doc: dict[str, Any]) -> list[str]:
    """The report's line naming each scenario's transport and model, when a run's scenarios used more than one
    (results.json: settings.effective.transport and .model; older files have neither: no line)."""
    groups: dict[str, list[str]] = {}
    for s in doc["scenarios"]:
        effective = s["settings"]["effective"]
        if not effective.get("transport"):
            return []
        version = f" v{effective['model_version']}" if effective.get("model_version") else ""
        label = s["scenario"] + (f"#{s['repeat']}" if s.get("repeat") else "")
        groups.setdefault(f"{effective['transport']} -> {effective['model']}{version}", []).append(label)
    if len(groups) < 2:
        return []
    return ["endpoints: " + "; ".join(f"{', '.join(labels)}: {where}" for where, labels in groups.items())]
