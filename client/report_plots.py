"""The report's latency figures, drawn with matplotlib (Agg) and returned as base64 PNG text for inlining.

Per scenario: the percentile spectrum of each traffic class (HdrHistogram's plot: the x axis is log 1/(1-p), so
p90, p99 and p99.9 are equally spaced and the tail gets the room), the send-lag spectrum beside it, and one
time figure from the interval log (client/timeline.py): latency p50/p99/max and throughput per interval, the
client's send lag and the host probe's wake-up lateness per second, on one axis of seconds from the measured
window's start. Functions return None when the data for their figure is absent; nothing here reads a file.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from tailmark.client.report import _label
from tailmark.client.results import ALL, ScenarioDoc
from tailmark.client.timeline import Slice

WIDE = (6.4, 3.3)  # inches at 96 dpi: two figures side by side fill a 1280 px page
TICKS = (1, 2, 10, 100, 1000, 10_000, 100_000, 1_000_000)  # 1/(1-p): p0, p50, p90, p99, p99.9, ...


def pyplot() -> Any | None:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def png(plt: Any, fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _classes(scenario: ScenarioDoc) -> list[str]:
    """ "all", then each named class when there are several (a lone class is the same numbers as "all")."""
    named = [name for name in scenario["classes"] if name != ALL]
    return [ALL, *named] if len(named) > 1 else [ALL]


def _spectrum_points(dist: dict[str, Any]) -> list[tuple[float, float]]:
    """(1/(1-p), value) for each stored percentile; p100 sits at 1/(1-p) = count, one rank past the last."""
    last = max(float(dist["count"]), 2.0)
    return [(1.0 / (1.0 - p / 100.0) if p < 100 else last, v) for p, v in dist["distribution"]]


def _plain_log(ax: Any) -> None:
    """A log y axis labelled 0.1, 1, 10 rather than 10^-1, 10^0, 10^1; a linear one when the data spans less than
    a decade and a half (a log axis would show no label at all)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    low, high = ax.dataLim.y0, ax.dataLim.y1
    if math.isfinite(low) and math.isfinite(high) and low > 0 and high / low < 30:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _percentile_axis(ax: Any, queries: int) -> None:
    ticks = [t for t in TICKS if t <= max(queries, 2)]
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{100 * (1 - 1 / t):g}%" for t in ticks])
    ax.set_xlabel("percentile (log scale of 1/(1-p))")
    ax.grid(True, which="both", alpha=0.3)


def spectrum_png(plt: Any, scenario: ScenarioDoc) -> str | None:
    """Latency by percentile, intended -> done per class (solid) and sent -> done of "all" (dashed)."""
    classes = scenario["classes"]
    if not classes[ALL]["latency_ms"]["intended_to_done"]["count"]:
        return None
    fig, ax = plt.subplots(figsize=WIDE)
    sent = scenario["settings"].get("latency_from") == "sent"  # closed loop: intended = sent, one line per class
    for name in _classes(scenario):
        points = _spectrum_points(classes[name]["latency_ms"]["intended_to_done"])
        if points:
            label = f"{name}: {'sent' if sent else 'intended'} → done"
            ax.plot(*zip(*points, strict=True), label=label, drawstyle="steps-post", linewidth=2 if name == ALL else 1)
    if not sent:
        points = _spectrum_points(classes[ALL]["latency_ms"]["sent_to_done"])
        if points:
            ax.plot(*zip(*points, strict=True), label="all: sent → done", drawstyle="steps-post", linestyle="--")
    bound = scenario["settings"]["effective"].get("latency_bound_ms")
    if bound:
        pct = scenario["settings"]["effective"].get("early_stopping_percentile")
        ax.axhline(bound, color="grey", linestyle=":", label=f"bound {bound:g} ms" + (f" at p{pct:g}" if pct else ""))
    _percentile_axis(ax, classes[ALL]["query_count"])
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{_label(scenario)}: latency by percentile")
    ax.legend(fontsize="small")
    return png(plt, fig)


def send_lag_png(plt: Any, scenario: ScenarioDoc) -> str | None:
    """The send lag (intended -> sent) by percentile per class; None when it is zero throughout (closed loop)."""
    classes = scenario["classes"]
    lag = classes[ALL]["latency_ms"]["send_lag"]
    if not lag["count"] or not lag["max"]:
        return None
    fig, ax = plt.subplots(figsize=WIDE)
    floor = 1e-3  # 1 µs: a log axis has no zero; lags below it sit on the floor
    for name in _classes(scenario):
        points = [(x, max(v, floor)) for x, v in _spectrum_points(classes[name]["latency_ms"]["send_lag"])]
        if points:
            ax.plot(*zip(*points, strict=True), label=name, drawstyle="steps-post", linewidth=2 if name == ALL else 1)
    bound = scenario["settings"]["effective"].get("send_lag_bound_ms")
    if bound:
        ax.axhline(bound, color="grey", linestyle=":", label=f"send-lag bound {bound:g} ms (p99)")
    _percentile_axis(ax, classes[ALL]["query_count"])
    _plain_log(ax)
    ax.set_ylabel("send lag (ms)")
    ax.set_title(f"{_label(scenario)}: send lag (intended → sent) by percentile")
    ax.legend(fontsize="small")
    return png(plt, fig)


def _steps(ax: Any, t0: float, slices: list[Slice], values: list[float | None], **style: Any) -> None:
    """One value per interval, drawn across the interval (a gap where the value is None)."""
    xs, ys = [], []
    for s, v in zip(slices, values, strict=True):
        xs += [s.start_s - t0, s.end_s - t0, float("nan")]
        ys += [math.nan if v is None else v] * 2 + [math.nan]
    ax.plot(xs, ys, **style)


def timeline_png(
    plt: Any, scenario: ScenarioDoc, latency: list[Slice], lag: list[Slice], window_s: tuple[float, float] | None
) -> str | None:
    """Latency and throughput per interval of the log, then the client's send lag and the host probe's lateness,
    against seconds from the measured window's start (dotted lines: the window's edges). Without the interval log
    (a results.json read on its own), the per-second figures results.json keeps."""
    evidence = scenario.get("evidence") or {}
    probe = evidence.get("host_probe") or {}
    t0 = window_s[0] if window_s else (latency[0].start_s if latency else 0.0)
    duration = scenario["duration_s"]
    if not latency and not scenario["throughput_per_s"]:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(6.4, 6.4), sharex=True, height_ratios=(1.3, 0.8, 1.0))
    top, middle, bottom = axes
    if latency:

        def ms(pick):  # a per-interval statistic in ms, None for an empty interval
            return [pick(s.histogram) / 1e6 if s.count else None for s in latency]

        _steps(top, t0, latency, ms(lambda h: h.value_at_percentile(50.0)), label="p50")
        _steps(top, t0, latency, ms(lambda h: h.value_at_percentile(99.0)), label="p99")
        _steps(top, t0, latency, ms(lambda h: h.max_value()), label="max", linestyle=":")
        _steps(middle, t0, latency, [s.count / s.length_s if s.length_s > 0 else None for s in latency])
    else:  # older run directories: completions per second of the window
        per_s = scenario["throughput_per_s"]
        middle.step(range(1, len(per_s) + 1), per_s, where="pre")
    _plain_log(top)
    top.set_ylabel("intended → done, ms" if scenario["settings"].get("latency_from") != "sent" else "sent → done, ms")
    top.set_title(f"{_label(scenario)}: latency over time (interval log) and what the host did")
    if latency:
        top.legend(fontsize="x-small", loc="upper left")
    middle.set_ylabel("completed / s")
    lag_values = [s.histogram.value_at_percentile(99.0) / 1e6 if s.count else None for s in lag]
    if lag and any(lag_values):
        _steps(bottom, t0, lag, [max(v, 1e-3) if v is not None else None for v in lag_values],
               label="client send lag p99")  # fmt: skip
    elif any(evidence.get("send_lag_p99_per_s_ms") or []):
        values = evidence["send_lag_p99_per_s_ms"]
        bottom.step(range(1, len(values) + 1), [max(v, 1e-3) for v in values], where="pre", label="client send lag p99")
    for key, label, style in (("late_p99_per_s_ms", "host probe: wake-up late p99", "-"),
                              ("late_max_per_s_ms", "host probe: wake-up late max", ":")):  # fmt: skip
        values = probe.get(key) or []
        if values:  # the probe's seconds count from the window's start (it is reset as the window opens)
            bottom.step(range(1, len(values) + 1), [max(v, 1e-3) for v in values], where="pre", label=label,
                        linestyle=style)  # fmt: skip
    bound = scenario["settings"]["effective"].get("send_lag_bound_ms")
    if bound:
        bottom.axhline(bound, color="grey", linestyle="--", linewidth=0.8, label=f"send-lag bound {bound:g} ms")
    _plain_log(bottom)
    bottom.set_ylabel("lateness, ms")
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(fontsize="x-small", loc="upper left")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        for edge in (0.0, duration):
            ax.axvline(edge, color="grey", linestyle=":", linewidth=0.8)
    bottom.set_xlabel("seconds from the measured window's start (dotted: its edges)")
    return png(plt, fig)
