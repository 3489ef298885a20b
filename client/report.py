"""Reports for people: a console table, summary.csv and a self-contained report.html.

Everything here reads a results document (``RunResult.to_dict()`` during a run, ``load_results`` after),
so ``tailmark report results.json`` renders the same output as the run did. Nothing here measures, and
nothing that measures prints.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from tailmark.client.repeat import summary_lines
from tailmark.client.report_tokens import token_lines
from tailmark.client.results import ALL, LATENCIES, ClassDoc, ResultsDoc, ScenarioDoc, write_atomic

_STATS = ("min", "mean", "p50", "p90", "p95", "p97", "p99", "p99_9", "max")
_HEADER = ("scenario", "class", "queries", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "lag p99", "errors")
SENT_MARK = "*"
SENT_LEGEND = f"{SENT_MARK} latency sent -> done: a closed loop sends each query when a slot frees (intended = sent)"


def _rows(scenario: ScenarioDoc) -> list[tuple[str, ClassDoc]]:
    """ "all" first; a lone named class is the same numbers as "all", so it is not repeated."""
    items = list(scenario["classes"].items())
    return items[:1] if len(items) == 2 else items


def _label(scenario: ScenarioDoc) -> str:
    """The scenario's name, with its repeat under --repeat: "server#2"."""
    repeat = scenario.get("repeat")
    return scenario["scenario"] + (f"#{repeat}" if repeat else "")


def _row_label(scenario: ScenarioDoc) -> str:
    """The table's scenario cell: the label, marked when the scenario's latency is sent -> done (``SENT_LEGEND``)."""
    return _label(scenario) + (SENT_MARK if scenario["settings"].get("latency_from") == "sent" else "")


def _sent_legend(doc: ResultsDoc) -> list[str]:
    """The legend line under a table with a marked row, else nothing."""
    marked = any(s["settings"].get("latency_from") == "sent" for s in doc["scenarios"])
    return [SENT_LEGEND] if marked else []


def _result(c: ClassDoc) -> str:
    """VALID, or INVALID with whom it blames: "INVALID (host)"."""
    cause = c["verdict"].get("cause")
    return c["verdict"]["result"] + (f" ({cause})" if cause else "")


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def console_table(doc: ResultsDoc) -> str:
    """One row per scenario and class, then the reasons, recommendations and warnings of each scenario."""
    rows = [(*_HEADER, "result")]
    for scenario in doc["scenarios"]:
        for name, c in _rows(scenario):
            lat, lag = c["latency_ms"]["intended_to_done"], c["latency_ms"]["send_lag"]
            rows.append((
                _row_label(scenario), name, str(c["query_count"]), _num(c["achieved_rate_qps"], 1),
                _num(lat["p50"]), _num(lat["p90"]), _num(lat["p99"]), _num(lat["p99_9"]),
                _num(lag["p99"]), str(c["error_count"]), _result(c),
            ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    left = {0, 1, len(widths) - 1}  # text columns
    lines = ["  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             .rstrip() for r in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += _sent_legend(doc)
    if not doc["complete"]:
        lines.append("")
        lines.append("PARTIAL RESULT" + (f": {doc['interrupted']}" if doc["interrupted"] else " (run still going)"))
    notes = (doc["environment"].get("target") or {}).get("notes") or []
    lines += [f"endpoint: {note}" for note in notes]
    lines += token_lines(doc)  # generative runs (client/report_tokens.py)
    lines += _calibration_lines(doc)
    for scenario in doc["scenarios"]:
        lines += _notes(scenario)
    if doc.get("repeats"):
        lines += summary_lines(doc["repeats"])  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


def _calibration_lines(doc: ResultsDoc) -> list[str]:
    cal = doc.get("calibration")
    if not cal:
        return []
    parts = []
    if cal["schedule_ceiling_qps"]:
        parts.append(f"schedule ceiling {cal['schedule_ceiling_qps']:.0f}/s (null transport)")
    if cal["cpu_us_per_request"] is not None:
        parts.append(f"{cal['cpu_us_per_request']:.0f} us client CPU per request against this target")
    if cal["ceiling_qps"]:
        parts.append(f"so ~{cal['ceiling_qps']:.0f}/s per client process")
    idle = cal.get("idle_probe")
    if idle and idle["wakeups"]:
        parts.append(f"host at rest: wake-ups late p99 {_num(idle['late_ms']['p99'])} ms")
    return ["", "client calibration: " + "; ".join(parts)] if parts else []


def _notes(scenario: ScenarioDoc) -> list[str]:
    out: list[str] = []
    for name, c in _rows(scenario):
        verdict = c["verdict"]
        estimate = verdict["early_stopping_estimate_ms"]
        failed = [check for check in verdict["checks"] if not check["passed"]]
        if not failed and estimate is None:
            continue
        cause = verdict.get("cause")
        out += ["", f"{_label(scenario)} / {name}: {verdict['result']}" + (f" (cause: {cause})" if cause else "")]
        if estimate is not None:
            pct = f"{verdict['early_stopping_percentile']:g}"
            out.append(f"  early-stopping p{pct} estimate: {estimate:.3f} ms")
        for check in failed:
            out.append(f"  - {check['name']}: {check['detail']}")
            if check["recommendation"]:
                out.append(f"    -> {check['recommendation']}")
    out += _interval_lines(scenario)
    out += _evidence_lines(scenario)
    out += _server_metrics_lines(scenario)
    stats = scenario.get("server_stats")
    if stats and stats["requests"]:
        mean = stats["mean_us"]
        sizes = " ".join(f"{size}x{count}" for size, count in stats["executions_by_batch_size"].items())
        out += [
            "",
            f"{_label(scenario)} server side, warm-up included: {stats['requests']} requests in "
            f"{stats['executions']} executions" + (f" (batch size x count: {sizes})" if sizes else ""),
            f"  mean per request: {mean['request'] / 1e3:.3f} ms = queue {mean['queue'] / 1e3:.3f} + input "
            f"{mean['compute_input'] / 1e3:.3f} + infer {mean['compute_infer'] / 1e3:.3f} + output "
            f"{mean['compute_output'] / 1e3:.3f} ms (and the server's own overhead)",
        ]
    if scenario["warnings"]:
        out += ["", f"{_label(scenario)} warnings:"] + [f"  ! {w}" for w in scenario["warnings"]]
    return out


def _interval_lines(scenario: ScenarioDoc) -> list[str]:
    """Each class's p99 with its confidence interval (results from before intervals have none)."""
    parts = []
    for name, c in _rows(scenario):
        intervals = c.get("intervals")
        p99 = c["latency_ms"]["intended_to_done"]["p99"]
        if not intervals or p99 is None:
            continue
        lo, hi = intervals["latency_ms"]["intended_to_done"]["p99"]
        parts.append(f"{name} {_num(p99)} in {'?' if lo is None else _num(lo)}..{'?' if hi is None else _num(hi)}")
        confidence = intervals["confidence"]
    if not parts:
        return []
    return ["", f"{_label(scenario)} p99 ms, {100 * confidence:g} % interval: " + "; ".join(parts)]


def _evidence_lines(scenario: ScenarioDoc) -> list[str]:
    """The client's and the host's side of the window, in two lines."""
    evidence = scenario.get("evidence")
    if not evidence:
        return []
    name = _label(scenario)
    client = [f"CPU {_num(evidence['client_cpu_pct'], 0)} %"]
    if evidence["issued_rate_qps"] is not None:
        client.append(f"issued {evidence['issued_rate_qps']:.1f}/s, {evidence['unsent_at_end']} of "
                      f"{evidence['offered']} unsent at the window's end")  # fmt: skip
    if evidence["held_by_cap"]:
        client.append(f"{evidence['held_by_cap']} held back by the in-flight cap")
    lines = ["", f"{name} client: " + ", ".join(client)]
    probe = evidence["host_probe"]
    if probe:
        late = probe["late_ms"]
        host = f"{name} host: wake-ups late p50 {_num(late['p50'])} / p99 {_num(late['p99'])}"
        host += f" / max {_num(late['max'])} ms"
        host += f" ({probe['wakeups']} wake-ups every {probe['period_us'] / 1000:g} ms"
        host += f" on CPUs {','.join(map(str, probe['cpus']))})" if probe["cpus"] else ")"
        if probe["steal_pct"] is not None:
            host += f", steal {probe['steal_pct']:.1f} %"
        if probe["involuntary_switches"] is not None:
            host += f", client preempted {probe['involuntary_switches']} times"
        if probe.get("client_wait_ms") is not None:
            host += f", client waited {probe['client_wait_ms']:.0f} ms for a CPU"
        lines.append(host)
    return lines


def _server_metrics_lines(scenario: ScenarioDoc) -> list[str]:
    """What the endpoint's scraped /metrics said over the scenario, in one line."""
    scraped = scenario.get("server_metrics")
    if not scraped:
        return []
    head = f"{_label(scenario)} server metrics"
    if not scraped["scrapes"]:
        return ["", f"{head}: none ({scraped['error']})"]
    totals: dict[str, list[float]] = {}
    for series in scraped["series"]:
        value = series["increase"] if series["kind"] == "counter" else series["max"]
        if value is not None:
            totals.setdefault(series["name"], []).append(value)
    parts = [f"{scraped['scrapes']} scrapes every {scraped['interval_s']:g} s"]
    if scraped["failed_scrapes"]:
        parts.append(f"{scraped['failed_scrapes']} failed ({scraped['error']})")
    named = (("nv_inference_request_success", "successes +{:.0f}", sum),
             ("nv_inference_pending_request_count", "pending max {:.0f}", max),
             ("nv_gpu_utilization", "GPU utilisation max {:.0%}", max))  # fmt: skip
    parts += [text.format(pick(totals[name])) for name, text, pick in named if name in totals]
    return ["", f"{head}: " + ", ".join(parts)]


# --- CSV ---


def csv_columns() -> list[str]:
    cols = ["scenario", "traffic_class", "result", "query_count", "ok_count", "error_count", "sample_count"]
    cols += ["duration_s", "offered_rate_qps", "achieved_rate_qps", "sample_rate_per_s", "overflow_count"]
    cols += [f"{lat}_{stat}_ms" for lat in LATENCIES for stat in _STATS]
    return [*cols, "early_stopping_estimate_ms", "errors", "reasons"]


def csv_text(doc: ResultsDoc) -> str:
    """summary.csv: one row per scenario and traffic class (including "all"), latencies in ms."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(), lineterminator="\n")
    writer.writeheader()
    for scenario in doc["scenarios"]:
        for name, c in scenario["classes"].items():
            row: dict[str, Any] = {"scenario": scenario["scenario"], "traffic_class": name}
            row["result"] = c["verdict"]["result"]
            for key in ("query_count", "ok_count", "error_count", "sample_count", "duration_s", "offered_rate_qps",
                        "achieved_rate_qps", "sample_rate_per_s", "overflow_count"):  # fmt: skip
                row[key] = c[key]  # type: ignore[literal-required]
            for lat in LATENCIES:
                for stat in _STATS:
                    row[f"{lat}_{stat}_ms"] = c["latency_ms"][lat][stat]  # type: ignore[literal-required]
            row["early_stopping_estimate_ms"] = c["verdict"]["early_stopping_estimate_ms"]
            row["errors"] = ";".join(f"{k}={v}" for k, v in sorted(c["errors"].items()))
            row["reasons"] = "; ".join(ch["name"] for ch in c["verdict"]["checks"] if not ch["passed"])
            writer.writerow(row)
    return buffer.getvalue()


def write_csv(doc: ResultsDoc, path: str | Path) -> None:
    write_atomic(path, csv_text(doc))


# --- HTML ---


def _pyplot() -> Any | None:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def percentile_plot_png(plt: Any, scenario: ScenarioDoc) -> str:
    """HDR-style percentile distribution on a log 1/(1-p) axis, one line per latency kind, base64 PNG."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    total = scenario["classes"][ALL]
    for lat, label in (("intended_to_done", "intended → done"), ("sent_to_done", "sent → done")):
        dist = total["latency_ms"][lat]
        points = [(1.0 / (1.0 - p / 100.0) if p < 100 else float(dist["count"]), v) for p, v in dist["distribution"]]
        if points:
            ax.plot(*zip(*points, strict=True), label=label, drawstyle="steps-post")
    ticks = [t for t in (1, 2, 10, 100, 1000, 10_000, 100_000, 1_000_000) if t <= max(total["query_count"], 2)]
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{100 * (1 - 1 / t):g}%" for t in ticks])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{_label(scenario)}: latency by percentile")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    png = _png(fig)
    plt.close(fig)
    return png


def lateness_plot_png(plt: Any, scenario: ScenarioDoc) -> str | None:
    """The client's send lag and the host probe's wake-up lateness, p99 of each second, on one time axis."""
    evidence = scenario.get("evidence") or {}
    lag = evidence.get("send_lag_p99_per_s_ms") or []
    if not any(lag):  # closed loop: intended = sent, nothing to show on a log axis
        lag = []
    probe = (evidence.get("host_probe") or {}).get("late_p99_per_s_ms") or []
    if not lag and not probe:
        return None
    fig, ax = plt.subplots(figsize=(7, 2.6))
    if lag:
        ax.plot(range(1, len(lag) + 1), lag, label="client send lag p99", drawstyle="steps-pre")
    if probe:
        ax.plot(range(1, len(probe) + 1), probe, label="host probe wake-up lateness p99", drawstyle="steps-pre")
    bound = scenario["settings"]["effective"].get("send_lag_bound_ms")
    if bound:
        ax.axhline(bound, color="grey", linestyle=":", label=f"send-lag bound {bound:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("second of the measured window")
    ax.set_ylabel("ms")
    ax.set_title(f"{_label(scenario)}: client lateness vs host lateness")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    png = _png(fig)
    plt.close(fig)
    return png


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


def server_metrics_plot_png(plt: Any, scenario: ScenarioDoc, series: dict[str, Any], model: str | None) -> str | None:
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
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.5 * len(panels) + 0.6), sharex=True, squeeze=False)
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
    png = _png(fig)
    plt.close(fig)
    return png


def throughput_plot_png(plt: Any, scenario: ScenarioDoc) -> str:
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot(range(len(scenario["throughput_per_s"])), scenario["throughput_per_s"], drawstyle="steps-post")
    ax.set_xlabel("second of the measured window")
    ax.set_ylabel("completed / s")
    ax.set_title(f"{_label(scenario)}: throughput over time")
    ax.grid(True, alpha=0.3)
    png = _png(fig)
    plt.close(fig)
    return png


_CSS = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}td.t,th.t{text-align:left}"
    ".VALID{color:#070}.INVALID{color:#b00;font-weight:bold}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}"
)


def html_report(doc: ResultsDoc, *, plots: bool = True, metrics: dict[str, Any] | None = None) -> str:
    """A self-contained page: the summary table, reasons and warnings, and inline PNG plots if possible
    (``metrics``: the run's metrics.json, whose server metrics are plotted beside each scenario's latency)."""
    esc = html.escape
    plt = _pyplot() if plots else None
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>tailmark report</title>"]
    parts.append(f"<style>{_CSS}</style></head><body><h1>tailmark report</h1>")
    env = doc["environment"]
    facts = [f"{k}: {env.get(k)}" for k in ("hostname", "cpu_model", "cpu_count_logical", "python", "os")]
    target, transport = env.get("target"), env.get("client_transport")
    if target:  # what was measured, and through which client transport (older results lack these)
        facts.append(f"target: {target.get('address')} model {target.get('model')} v{target.get('version')}")
    if transport:
        facts.append(f"transport: {transport.get('kind')} x{transport.get('connections')}")
    parts.append(f"<p>{esc(' · '.join(facts))}<br>created {esc(doc['created_at'])}, updated {esc(doc['updated_at'])}")
    if not doc["complete"]:
        parts.append(f" — <b>partial result</b>{': ' + esc(doc['interrupted']) if doc['interrupted'] else ''}")
    parts.append("</p><table><tr>" + "".join(f"<th class='{'t' if i < 2 else ''}'>{esc(h)}</th>"
                                             for i, h in enumerate((*_HEADER, "result"))) + "</tr>")  # fmt: skip
    for scenario in doc["scenarios"]:
        for name, c in _rows(scenario):
            lat, lag = c["latency_ms"]["intended_to_done"], c["latency_ms"]["send_lag"]
            cells = [_num(c["achieved_rate_qps"], 1), *(_num(lat[k]) for k in ("p50", "p90", "p99", "p99_9"))]
            cells = [str(c["query_count"]), *cells, _num(lag["p99"]), str(c["error_count"])]
            result = c["verdict"]["result"]
            parts.append(f"<tr><td class='t'>{esc(_row_label(scenario))}</td><td class='t'>{esc(name)}</td>"
                         + "".join(f"<td>{v}</td>" for v in cells)
                         + f"<td class='t {result}'>{esc(_result(c))}</td></tr>")  # fmt: skip
    parts.append("</table>")
    parts += [f"<p class='legend'>{esc(line)}</p>" for line in _sent_legend(doc)]
    endpoint = [f"endpoint: {note}" for note in (env.get("target") or {}).get("notes") or []]
    notes = endpoint + _calibration_lines(doc) + [line for s in doc["scenarios"] for line in _notes(s)]
    if notes:
        parts.append(f"<pre>{esc(chr(10).join(notes).strip())}</pre>")
    scraped = (metrics or {}).get("scenarios") or []  # one entry per scenario, in the same order
    model = (env.get("target") or {}).get("model")
    for i, scenario in enumerate(doc["scenarios"]):
        parts.append(f"<h2>{esc(_label(scenario))}</h2>")
        if plt is None:
            if plots:
                parts.append("<p>(plots need matplotlib: pip install tailmark[plot])</p>")
            continue
        if scenario["classes"][ALL]["latency_ms"]["intended_to_done"]["count"]:
            parts.append(
                f"<img alt='latency by percentile' src='data:image/png;base64,{percentile_plot_png(plt, scenario)}'>"
            )
        if scenario["throughput_per_s"]:
            parts.append(f"<br><img alt='throughput' src='data:image/png;base64,{throughput_plot_png(plt, scenario)}'>")
        lateness = lateness_plot_png(plt, scenario)
        if lateness:
            parts.append(f"<br><img alt='client and host lateness' src='data:image/png;base64,{lateness}'>")
        if i < len(scraped):
            server = server_metrics_plot_png(plt, scenario, {"url": metrics.get("url"), **scraped[i]}, model)  # type: ignore[union-attr]
            if server:
                parts.append(f"<br><img alt='server metrics' src='data:image/png;base64,{server}'>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(doc: ResultsDoc, path: str | Path) -> None:
    metrics = None
    with contextlib.suppress(OSError, ValueError):  # the server metrics the run scraped (client/metrics_scrape.py)
        metrics = json.loads((Path(path).parent / "metrics.json").read_text(encoding="utf-8"))
    write_atomic(path, html_report(doc, metrics=metrics))


def write_reports(doc: ResultsDoc, out_dir: str | Path) -> list[Path]:
    """summary.csv, report.html, perf_analyzer.csv and LoadGen's logs (``mlperf/<scenario>/``) in ``out_dir``
    (results.json is ``RunResult.write``'s job)."""
    from tailmark.client import outputs_mlperf, outputs_perf_analyzer

    out = Path(out_dir)
    write_csv(doc, out / "summary.csv")
    write_html(doc, out / "report.html")
    familiar = outputs_perf_analyzer.write(doc, out) + outputs_mlperf.write(doc, out)
    return [out / "summary.csv", out / "report.html", *familiar]


# --- a sweep's curve ---


def sweep_html(doc: dict[str, Any], curve_png: bytes | None = None) -> str:
    """A sweep's page from its sweep.json: the latency-throughput curve (the sweep's curve.png, inlined), the
    per-step table with a link to each step's own report, and the knee. Self-contained like ``html_report``."""
    from tailmark.client.sweep import Knee, knee_text

    esc = html.escape
    steps, found = doc["steps"], Knee(**doc["knee"])
    closed = doc["kind"] == "concurrency"
    title = f"tailmark sweep: latency vs throughput over {'concurrency' if closed else 'request rate'}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"]
    parts.append(f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1><p>")
    state = "complete" if doc["complete"] else "<b>partial</b>" + (f": {esc(doc['stopped'])}" if doc["stopped"] else "")
    parts.append(f"{len(steps)} steps, {state}. {esc(knee_text(found))}</p>")
    if curve_png:
        png = base64.b64encode(curve_png).decode("ascii")
        parts.append(f"<img alt='latency vs throughput' src='data:image/png;base64,{png}'>")
    else:
        parts.append("<p>(the curve's plot needs matplotlib: pip install tailmark[plot])</p>")
    head = ("step", "scenario", "concurrency" if closed else "target/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms",
            "p99.9 ms", "queries", "errors", "result", "run")  # fmt: skip
    parts.append("<table><tr>" + "".join(f"<th class='{'t' if h in ('scenario', 'result', 'run') else ''}'>"
                                         f"{esc(h)}</th>" for h in head) + "</tr>")  # fmt: skip
    for s in steps:
        load = s["concurrency"] if closed else s["target_qps"]
        mark = SENT_MARK if s["scenario"] == "concurrency" else ""
        latencies = (_num(s[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms"))
        cells = [f"{load:g}", _num(s["achieved_qps"], 1), *latencies, str(s["queries"]), str(s["errors"])]
        result = s["result"] + (f" ({s['cause']})" if s["cause"] else "")
        result += " ← knee" if s["step"] == found.step else ""
        link = f"{s['run_dir']}/report.html"
        parts.append(f"<tr><td>{s['step']}</td><td class='t'>{esc(s['scenario'] + mark)}</td>"
                     + "".join(f"<td>{v}</td>" for v in cells)
                     + f"<td class='t {esc(s['result'])}'>{esc(result)}</td>"
                     + f"<td class='t'><a href='{esc(link)}'>{esc(s['run_dir'])}</a></td></tr>")  # fmt: skip
    parts.append("</table>")
    if closed:
        parts.append(f"<p class='legend'>{esc(SENT_LEGEND)}</p>")
    parts.append(f"<p>latency: {esc(doc['latency'])}. The curve's numbers: curve.csv, sweep.json.</p></body></html>\n")
    return "".join(parts)


def write_sweep_html(sweep_dir: str | Path) -> Path:
    """report.html in a sweep's directory, from its sweep.json and curve.png (when the sweep drew one)."""
    folder = Path(sweep_dir)
    doc = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    curve = folder / "curve.png"
    path = folder / "report.html"
    write_atomic(path, sweep_html(doc, curve.read_bytes() if curve.exists() else None))
    return path
