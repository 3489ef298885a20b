"""LoadGen's LLM constraints on token latencies, and the mlperf.conf presets for them.

For LLM benchmarks LoadGen replaces the Server scenario's single latency bound with two, each judged at the
scenario's percentile (p99) with its early-stopping rule: time to first token (TTFT) and time per output
token (TPOT, the first token excluded). Here TTFT counts from the intended send time, as LoadGen's latencies
do; TPOT is per request (client/token_metrics.py). A failed request counts as over both bounds.

``--ttft-p99-ms`` and ``--tpot-p99-ms`` set the bounds (settings ``ttft_bound_ms``, ``tpot_bound_ms``);
``--llm-preset NAME`` sets both to a pair from mlperf.conf (``PRESETS``). With a token bound, the Server
scenario's end-to-end bound defaults to none (LoadGen's LLMs set ``target_latency`` to 0).
"""

from __future__ import annotations

import dataclasses

from tailmark.client.check import Check
from tailmark.client.settings import EffectiveSettings
from tailmark.client.token_metrics import TokenStats
from tailmark.client.verdict import early_stopping, percentile_ns

# mlperf.conf's (TTFT, TPOT) pairs in ms
PRESETS: dict[str, tuple[float, float]] = {
    "llama2-70b": (2000.0, 200.0),
    "llama2-70b-interactive": (450.0, 40.0),
    "llama3.1-8b-interactive": (500.0, 30.0),
    "deepseek-r1-interactive": (1500.0, 15.0),
    "gpt-oss-120b": (3000.0, 80.0),
}
TOKEN_CHECKS = ("ttft_bound", "tpot_bound")


def _bound_check(name: str, label: str, stats: TokenStats, metric: str, bound_ms: float, pct: float, failed: int):
    histogram = stats.histogram(metric)
    bound_ns = round(bound_ms * 1e6)
    stopping = early_stopping(histogram, pct, bound_ns, failed=failed)
    value = percentile_ns(histogram, pct)
    detail = f"{label} p{pct:g} {value / 1e6:.3f} ms, bound {bound_ms:g} ms; {stopping.detail}"
    passed = bool(histogram.get_total_count()) and value <= bound_ns and stopping.passed
    advice = "" if passed else f"Reduce target QPS (or concurrency) to bring {label} p{pct:g} under {bound_ms:g} ms"
    if not passed and stopping.recommendation and value <= bound_ns:
        advice = stopping.recommendation
    return Check(name, passed, detail, advice)


def token_checks(settings: EffectiveSettings, stats: TokenStats | None, failed: int) -> list[Check]:
    """The TTFT and TPOT checks the settings ask for (none when no token bound is set, or no token timings were
    recorded: ``with_token_checks`` then says so in the verdict's notes)."""
    if stats is None:
        return []
    pct = settings.early_stopping_percentile or 99.0
    checks = []
    for name, label, metric, bound in (
        ("ttft_bound", "TTFT", "ttft", settings.ttft_bound_ms),
        ("tpot_bound", "TPOT", "tpot", settings.tpot_bound_ms),
    ):
        if bound:
            checks.append(_bound_check(name, label, stats, metric, bound, pct, failed))
    return checks


def with_token_checks(verdict, settings: EffectiveSettings, stats: TokenStats | None, failed: int):
    """``verdict`` with the token checks added after its own; without token timings (a merge of runs that wrote no
    tokens.json, e.g. from before it existed) the bounds are not judged and a note says so."""
    if stats is None:
        if not (settings.ttft_bound_ms or settings.tpot_bound_ms):
            return verdict
        note = "TTFT/TPOT bounds not judged: this result holds no token timings (no tokens.json in the merged runs)"
        return dataclasses.replace(verdict, notes=(*verdict.notes, note))
    extra = token_checks(settings, stats, failed)
    return dataclasses.replace(verdict, checks=(*verdict.checks, *extra)) if extra else verdict
