"""The server's own account of a scenario: ModelStatistics before and after, as a difference.

perf_analyzer's server-side breakdown, for endpoints that implement the statistics extension (Triton,
tailmark); others (KServe, MLServer) have none and the result says so with ``None`` (and
``control.endpoint_notes`` says it once per run, in words).
"""

from __future__ import annotations

from typing import Any

from tailmark.client.errors import TransportError

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


async def snapshot(transport, model: str):
    """The model's statistics now, or None when the endpoint has none."""
    fetch = getattr(transport, "model_statistics", None)
    if fetch is None:
        return None
    try:
        return await fetch(model)
    except TransportError:
        return None


def difference(before, after) -> dict[str, Any] | None:
    """Requests, executions and average time per phase between two snapshots (all versions summed)."""
    if before is None or after is None:
        return None

    def totals(response):
        sums: dict[str, float] = {"success": 0, "fail": 0, "executions": 0, "inferences": 0}
        batches: dict[int, int] = {}
        for stats in response.model_stats:
            infer = stats.inference_stats
            sums["success"] += infer.success.count
            sums["fail"] += infer.fail.count
            sums["executions"] += stats.execution_count
            sums["inferences"] += stats.inference_count
            sums["success_ns"] = sums.get("success_ns", 0) + infer.success.ns
            for phase in PHASES:
                sums[f"{phase}_ns"] = sums.get(f"{phase}_ns", 0) + getattr(infer, phase).ns
            for batch in stats.batch_stats:
                batches[batch.batch_size] = batches.get(batch.batch_size, 0) + batch.compute_infer.count
        return sums, batches

    (a, batches_a), (b, batches_b) = totals(before), totals(after)
    requests = int(b["success"] - a["success"])
    per_request_us = {
        phase: (b.get(f"{phase}_ns", 0) - a.get(f"{phase}_ns", 0)) / requests / 1e3 if requests else 0.0
        for phase in ("success", *PHASES)
    }
    return {
        "requests": requests,
        "failures": int(b["fail"] - a["fail"]),
        "executions": int(b["executions"] - a["executions"]),
        "inferences": int(b["inferences"] - a["inferences"]),
        "mean_us": {"request" if k == "success" else k: round(v, 1) for k, v in per_request_us.items()},
        "executions_by_batch_size": {
            str(size): count - batches_a.get(size, 0)
            for size, count in sorted(batches_b.items())
            if count - batches_a.get(size, 0)
        },
    }
