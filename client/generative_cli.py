"""``tailmark run`` flags for generative endpoints (``--transport openai`` or ``grpc-stream``), kept apart from
client/cli.py.

Workload flags (``--api``, ``--input-tokens``, ``--output-tokens``, ``--ignore-eos``, ``--no-stream``) build
the prompt pool (client/prompts.py); the token bounds and goodput SLOs are scenario settings
(``TOKEN_SETTING_FLAGS``, merged into cli.SETTING_FLAGS so sweep, search and run files take them too);
``--llm-preset`` fills the two bounds from mlperf.conf's pairs (client/token_verdict.PRESETS).
``token_settings`` applies it and refuses token settings on a transport without token timings.
"""

from __future__ import annotations

import argparse
from typing import Any

# token_verdict.PRESETS' names, without importing numpy to parse the command line
PRESET_NAMES = ("llama2-70b", "llama2-70b-interactive", "llama3.1-8b-interactive", "deepseek-r1-interactive",
                "gpt-oss-120b")  # fmt: skip

TOKEN_SETTING_FLAGS: dict[str, tuple[str, type, str]] = {
    "--ttft-p99-ms": ("ttft_bound_ms", float, "LoadGen's LLM constraint: time to first token (from the intended "
                      "send) at the scenario's percentile (p99) must be at most this"),
    "--tpot-p99-ms": ("tpot_bound_ms", float, "LoadGen's LLM constraint: time per output token (first excluded) "
                      "at the scenario's percentile must be at most this"),
    "--slo-ttft-ms": ("slo_ttft_ms", float, "token goodput: a request is good if its TTFT is at most this "
                      "(and it meets the other --slo-* given)"),
    "--slo-tpot-ms": ("slo_tpot_ms", float, "token goodput: per-request TPOT at most this"),
    "--slo-e2e-ms": ("slo_e2e_ms", float, "token goodput: intended -> last byte at most this"),
    "--turns": ("turns", int, "multi-turn sessions of this many turns, each sent after the last answer + "
                "--think-time-ms with the history carried; concurrency: N sessions at a time, server/poisson: "
                "--target-qps sessions/s (default 1: single requests)"),
}  # fmt: skip


# workload flags only the generative transports honour, with their defaults: token_settings refuses them elsewhere
WORKLOAD_DEFAULTS = {"--shared-prefix-tokens": 0, "--prefix-count": 1, "--prefix-reuse": 1.0, "--cancel-after-ms": 0.0,
                     "--cancel-after-tokens": 0, "--cancel-share": 1.0}  # fmt: skip


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_generative_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generative endpoints (--transport openai or grpc-stream)")
    group.add_argument("--api", choices=("completions", "chat"), default="completions",
                       help="/v1/completions (default) or /v1/chat/completions")  # fmt: skip
    group.add_argument("--input-tokens", type=int, default=128, help="prompt length in tokens (default 128)")
    group.add_argument("--output-tokens", type=int, default=64, help="max_tokens of each request (default 64)")
    group.add_argument("--ignore-eos", action="store_true", help="ask the server to generate all max_tokens")
    group.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT, no gaps)")
    group.add_argument("--llm-preset", choices=PRESET_NAMES, help="TTFT/TPOT bounds from mlperf.conf's pair")
    group.add_argument(
        "--shared-prefix-tokens",
        type=int,
        default=0,
        help="shared-prefix workload: prompts start with one of --prefix-count prefixes this long",
    )
    group.add_argument("--prefix-count", type=int, default=1, help="distinct shared prefixes (default 1)")
    group.add_argument(
        "--prefix-reuse", type=float, default=1.0, help="share of prompts that start with a shared prefix (default 1.0)"
    )
    group.add_argument(
        "--cancel-after-ms",
        type=float,
        default=0.0,
        help="close the stream of (a --cancel-share of) requests this long after the send",
    )
    group.add_argument(
        "--cancel-after-tokens",
        type=int,
        default=0,
        help="close the stream of (a --cancel-share of) requests after this many tokens",
    )
    group.add_argument(
        "--cancel-share",
        type=float,
        default=1.0,
        help="share of requests cancelled, drawn from --sample-seed (default 1.0 when cancelling)",
    )


def token_settings(args: argparse.Namespace, common: dict[str, Any]) -> None:
    """--llm-preset: the pair's bounds, unless a flag or the run file set them; token bounds and SLOs are refused
    (ConfigError) for a transport that records no token timings."""
    name = getattr(args, "llm_preset", None)
    if name:
        from tailmark.client.token_verdict import PRESETS

        ttft, tpot = PRESETS[name]
        common.setdefault("ttft_bound_ms", ttft)
        common.setdefault("tpot_bound_ms", tpot)
    transport = getattr(args, "transport", "openai")
    generative = transport in ("openai", "grpc-stream")
    asked = [flag for flag, (field, _, _) in TOKEN_SETTING_FLAGS.items() if common.get(field)]
    asked = [flag for flag in asked if flag != "--turns" or (common.get("turns") or 1) > 1]
    asked += [flag for flag, default in WORKLOAD_DEFAULTS.items() if getattr(args, _dest(flag), default) != default]
    if asked and not generative:
        from tailmark.client.errors import ConfigError

        flag = asked[0] + (" (or --llm-preset)" if asked[0] in ("--ttft-p99-ms", "--tpot-p99-ms") else "")
        raise ConfigError(
            f"{flag}: generative workloads and token timings need --transport openai or grpc-stream, not {transport}"
        )


async def connect(args: argparse.Namespace, target: str, common: dict[str, Any]):
    from tailmark.cli import UsageError
    from tailmark.client.openai_transport import OpenAITransport

    if args.transport == "grpc-stream":  # KServe ModelStreamInfer, Triton's LLM convention
        from tailmark.client.grpc_stream_transport import GrpcStreamTransport

        transport = await GrpcStreamTransport.connect(target, **common)
    else:
        if args.connections < 1:
            raise UsageError(f"--connections {args.connections}: must be >= 1")
        transport = await OpenAITransport.connect(target, api=args.api, connections=args.connections, **common)
    cancel = cancel_policy(args)
    if cancel is None:
        return transport
    from tailmark.client.cancellation import CancellingTransport

    return CancellingTransport(transport, cancel)


def cancel_policy(args: argparse.Namespace):
    """--cancel-after-ms / --cancel-after-tokens / --cancel-share (client/cancellation.py), or None."""
    after_ms, after_tokens = getattr(args, "cancel_after_ms", 0.0), getattr(args, "cancel_after_tokens", 0)
    share = getattr(args, "cancel_share", 1.0)
    if not (after_ms or after_tokens or share != 1.0):
        return None
    from tailmark.client.cancellation import CancelPolicy

    seed = getattr(args, "sample_seed", None) or 0
    return CancelPolicy(after_ms=after_ms, after_tokens=after_tokens, share=share, seed=seed)


def prompt_pool(args: argparse.Namespace, info, seed: int):
    from tailmark.client.errors import ConfigError
    from tailmark.client.prompts import PromptPool, TritonPromptPool

    if args.input_data:
        raise ConfigError(f"--input-data: the {args.transport} transport builds prompts itself (--input-tokens)")
    if getattr(args, "transport", "openai") == "grpc-stream":
        if args.api != "completions":
            raise ConfigError("--api: grpc-stream sends Triton's text_input (one prompt); --api is for openai")
        return TritonPromptPool(
            info, count=args.pool_size, input_tokens=args.input_tokens, output_tokens=args.output_tokens, seed=seed,
            stream=not args.no_stream, ignore_eos=args.ignore_eos, prefix=prefix_spec(args),
        )  # fmt: skip
    return PromptPool(
        info, api=args.api, count=args.pool_size, input_tokens=args.input_tokens, output_tokens=args.output_tokens,
        seed=seed, stream=not args.no_stream, ignore_eos=args.ignore_eos, prefix=prefix_spec(args),
    )  # fmt: skip


def prefix_spec(args: argparse.Namespace):
    """--shared-prefix-tokens / --prefix-count / --prefix-reuse (client/prefix_workload.py), or None."""
    tokens = getattr(args, "shared_prefix_tokens", 0)
    if not tokens:
        if getattr(args, "prefix_count", 1) != 1 or getattr(args, "prefix_reuse", 1.0) != 1.0:
            from tailmark.client.errors import ConfigError

            raise ConfigError("--prefix-count and --prefix-reuse need --shared-prefix-tokens")
        return None
    from tailmark.client.prefix_workload import PrefixSpec

    return PrefixSpec(tokens=tokens, count=args.prefix_count, reuse=args.prefix_reuse)
