"""The report's server-side figures: where a request's time went, and the endpoint's scraped metrics over time.

``breakdown`` splits a scenario's mean latency into the client's send lag, the way to the server and back
(network, the frontend, the client's own receive: sent -> done minus the server's request time), and the server's
own phases from its ModelStatistics difference (server_stats in results.json: queue, compute input, infer,
output, and the rest of its request time). The server's numbers include the scenario's warm-up requests and the
client's do not, so the split is of means, not of one request. ``server_metrics_png`` plots metrics.json
(client/metrics_scrape.py) beside the latency: queue depth and GPU utilisation explain tails.
"""

from __future__ import annotations

from typing import Any

from tailmark.client.report import _label
from tailmark.client.report_plots import png
from tailmark.client.results import ALL, ScenarioDoc

PARTS = (  # (key, label, colour): the client's share first, then the server's phases in the order they happen
    ("send_lag", "client send lag", "#9e9e9e"),
    ("network", "network + frontends", "#64b5f6"),
    ("queue", "server queue", "#ef5350"),
    ("compute_input", "compute input", "#ffb74d"),
    ("compute_infer", "compute infer", "#66bb6a"),
    ("compute_output", "compute output", "#ba68c8"),
    ("server_other", "server other", "#8d6e63"),
)


def breakdown(scenario: ScenarioDoc) -> dict[str, float] | None:
    """Mean ms per request of each part in ``PARTS``; None without server statistics or a measured request."""
    stats = scenario.get("server_stats")
    total = scenario["classes"][ALL]["latency_ms"]
    if not stats or not stats.get("requests") or total["sent_to_done"]["mean"] is None:
        return None
    mean = {k: v / 1e3 for k, v in stats["mean_us"].items()}  # µs -> ms
    phases = sum(mean.get(k, 0.0) for k in ("queue", "compute_input", "compute_infer", "compute_output"))
    parts = {"send_lag": total["send_lag"]["mean"] or 0.0}
    parts["network"] = max(total["sent_to_done"]["mean"] - mean.get("request", phases), 0.0)
    parts.update({k: mean.get(k, 0.0) for k in ("queue", "compute_input", "compute_infer", "compute_output")})
    parts["server_other"] = max(mean.get("request", phases) - phases, 0.0)
    return parts


def breakdown_png(plt: Any, scenarios: list[ScenarioDoc]) -> str | None:
    """One horizontal stacked bar of mean ms per request per scenario (log-free: the parts add up)."""
    rows = [(_label(s), parts) for s in scenarios if (parts := breakdown(s)) is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(rows) + 1.4))
    names = [name for name, _ in rows][::-1]  # the first scenario on top
    left = [0.0] * len(rows)
    for key, label, colour in PARTS:
        widths = [parts[key] for _, parts in rows][::-1]
        ax.barh(names, widths, left=left, label=label, color=colour)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("mean ms per request (server phases include the warm-up)")
    ax.set_title("where the time went: client, network, server phases")
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, axis="x", alpha=0.3)
    return png(plt, fig)


SERVER_SERIES = (
    "nv_inference_request_success",
    "nv_inference_pending_request_count",
    "nv_inference_queue_duration_us",
    "nv_gpu_utilization",
)


def _summed(entries: list[dict[str, Any]], name: str, key: str, model: str | None) -> list[float | None] | None:
    """``key`` ("values" or "rate_per_s") of the series named ``name`` of ``model`` (or without a model label),
    added point by point; None when there is none."""
    picked = [e[key] for e in entries if e["name"] == name and e["labels"].get("model", model) == model and key in e]
    if not picked:
        return None
    return [None if any(v is None for v in col) else sum(col) for col in zip(*picked, strict=True)]


def server_metrics_png(plt: Any, scenario: ScenarioDoc, series: dict[str, Any], model: str | None) -> str | None:
    """The scraped server metrics over the scenario, in seconds from the window's start, one small panel each:
    successes/s, pending requests, mean queue time per request, GPU utilisation, any other kept series."""
    t, entries = series["t_s"], series["series"]
    if len(t) < 2 or not entries:
        return None
    panels: list[tuple[str, list[tuple[str, list[float | None]]]]] = []
    success = _summed(entries, "nv_inference_request_success", "rate_per_s", model)
    if success:
        panels.append(("successes / s", [("server", success)]))
    pending = _summed(entries, "nv_inference_pending_request_count", "values", model)
    if pending:
        panels.append(("pending requests", [("server", pending)]))
    queue = _summed(entries, "nv_inference_queue_duration_us", "rate_per_s", model)
    if queue and success:
        per = [None if q is None or not s else q / s / 1e3 for q, s in zip(queue, success, strict=True)]
        panels.append(("queue ms / request", [("mean", per)]))
    gpus = [e for e in entries if e["name"] == "nv_gpu_utilization"]
    if gpus:
        lines = [(e["labels"].get("gpu_uuid", "")[:12], [None if v is None else 100 * v for v in e["values"]])
                 for e in gpus]  # fmt: skip
        panels.append(("GPU utilisation %", lines))
    others = [e for e in entries if e["name"] not in SERVER_SERIES and e["labels"].get("model", model) == model][:8]
    if others:
        lines = [(e["name"] + ("/s" if e["kind"] == "counter" else ""), e.get("rate_per_s") or e["values"])
                 for e in others]  # fmt: skip
        panels.append(("other kept series", lines))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.4, 1.5 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (title, lines) in zip(axes[:, 0], panels, strict=True):
        for label, values in lines:
            ax.plot(t, [float("nan") if v is None else v for v in values], label=label, drawstyle="steps-pre")
        for edge in series["window_s"]:
            ax.axvline(edge, color="grey", linestyle=":")
        ax.set_ylabel(title, fontsize="small")
        ax.grid(True, alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize="x-small")
    axes[-1, 0].set_xlabel("seconds from the measured window's start (dotted: the window)")
    axes[0, 0].set_title(f"{_label(scenario)}: server metrics scraped from {series.get('url')}", fontsize="small")
    return png(plt, fig)
