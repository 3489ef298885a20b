"""``tailmark run`` flags for generative endpoints (``--transport openai``), kept apart from client/cli.py.

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
}  # fmt: skip


def add_generative_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generative endpoints (--transport openai)")
    group.add_argument("--api", choices=("completions", "chat"), default="completions",
                       help="/v1/completions (default) or /v1/chat/completions")  # fmt: skip
    group.add_argument("--input-tokens", type=int, default=128, help="prompt length in tokens (default 128)")
    group.add_argument("--output-tokens", type=int, default=64, help="max_tokens of each request (default 64)")
    group.add_argument("--ignore-eos", action="store_true", help="ask the server to generate all max_tokens")
    group.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT, no gaps)")
    group.add_argument("--llm-preset", choices=PRESET_NAMES, help="TTFT/TPOT bounds from mlperf.conf's pair")


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
    asked = [flag for flag, (field, _, _) in TOKEN_SETTING_FLAGS.items() if common.get(field)]
    if asked and transport != "openai":
        from tailmark.client.errors import ConfigError

        raise ConfigError(f"{asked[0]} (or --llm-preset): token timings need --transport openai, not {transport}")


async def connect(args: argparse.Namespace, target: str, common: dict[str, Any]):
    from tailmark.cli import UsageError
    from tailmark.client.openai_transport import OpenAITransport

    if args.connections < 1:
        raise UsageError(f"--connections {args.connections}: must be >= 1")
    return await OpenAITransport.connect(target, api=args.api, connections=args.connections, **common)


def prompt_pool(args: argparse.Namespace, info, seed: int):
    from tailmark.client.prompts import PromptPool

    if args.input_data:
        from tailmark.client.errors import ConfigError

        raise ConfigError("--input-data: the openai transport builds prompts itself (--input-tokens)")
    return PromptPool(
        info, api=args.api, count=args.pool_size, input_tokens=args.input_tokens, output_tokens=args.output_tokens,
        seed=seed, stream=not args.no_stream, ignore_eos=args.ignore_eos,
    )  # fmt: skip
