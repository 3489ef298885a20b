"""Reports for people: a console table, summary.csv, and ``write_reports``, which writes every file a run shows.

Everything here reads a results document (``RunResult.to_dict()`` during a run, ``load_results`` after),
so ``tailmark report results.json`` renders the same output as the run did. Nothing here measures, and
nothing that measures prints. The HTML page is client/report_html.py (its plots: report_plots.py and
report_server.py); a sweep's page is client/report_sweep.py.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tailmark.client.repeat import summary_lines
from tailmark.client.report_tokens import TOKEN_CSV_COLUMNS, token_csv_row, token_lines
from tailmark.client.results import LATENCIES, ClassDoc, ResultsDoc, ScenarioDoc, write_atomic
from tailmark.client.scenario_routes import endpoint_lines, endpoint_notes
from tailmark.client.sessions import session_lines

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
    rows = [(*_HEADER[:4], "goodput/s", *_HEADER[4:], "result")]
    for scenario in doc["scenarios"]:
        for name, c in _rows(scenario):
            lat, lag = c["latency_ms"]["intended_to_done"], c["latency_ms"]["send_lag"]
            rows.append((
                _row_label(scenario), name, str(c["query_count"]), _num(c["achieved_rate_qps"], 1),
                _num((c.get("goodput") or {}).get("rate_per_s"), 1),
                _num(lat["p50"]), _num(lat["p90"]), _num(lat["p99"]), _num(lat["p99_9"]),
                _num(lag["p99"]), str(c["error_count"]), _result(c),
            ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    left = {0, 1, len(widths) - 1}  # text columns
    lines = ["  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             .rstrip() for r in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += _sent_legend(doc)
    lines += endpoint_lines(doc)  # scenarios with their own transport or model (client/scenario_routes.py)
    if not doc["complete"]:
        lines.append("")
        lines.append("PARTIAL RESULT" + (f": {doc['interrupted']}" if doc["interrupted"] else " (run still going)"))
    lines += endpoint_notes(doc)
    lines += token_lines(doc)  # generative runs (client/report_tokens.py)
    lines += session_lines(doc)  # multi-turn sessions (client/sessions.py)
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
        against = f"against {cal['endpoint']}" if len(doc["environment"].get("endpoints") or []) > 1 else ""
        parts.append(f"{cal['cpu_us_per_request']:.0f} us client CPU per request {against or 'against this target'}")
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
    out += _goodput_lines(scenario)
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
        text = f"{name} {_num(p99)} in {'?' if lo is None else _num(lo)}..{'?' if hi is None else _num(hi)}"
        factor = ((intervals.get("correlation") or {}).get("intended_to_done") or {}).get("p99")
        parts.append(text + (f" (x{factor:g} for correlation)" if factor and factor > 1.0 else ""))
        confidence = intervals["confidence"]
    if not parts:
        return []
    return ["", f"{_label(scenario)} p99 ms, {100 * confidence:g} % interval: " + "; ".join(parts)]


def _goodput_lines(scenario: ScenarioDoc) -> list[str]:
    """Each class's goodput beside its throughput, against its SLO (client/goodput.py), in one line."""
    parts = []
    for name, c in _rows(scenario):
        good = c.get("goodput")
        if not good:
            continue
        slo = [f"{good['slo_ms']:g} ms"] if good["slo_ms"] else [] if len(good["classes"]) < 2 else ["each its own"]
        if good["deadline_count"]:
            slo.append(f"{good['deadline_count']} own deadlines")
        share = "-" if good["share"] is None else f"{100 * good['share']:.2f} %"
        parts.append(f"{name} {good['rate_per_s']:.1f}/s of {c['achieved_rate_qps']:.1f}/s ({good['good_count']} of "
                     f"{good['query_count']}, {share}; SLO {', '.join(slo)})")  # fmt: skip
    if not parts:
        return []
    return ["", f"{_label(scenario)} goodput, requests/s within their SLO: " + "; ".join(parts)]


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
    steady = evidence.get("stability")
    if steady:  # --stability-percentage: perf_analyzer's rule over the window's last windows
        lines.append(f"{name} stability: {steady['detail']}")
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
    cols += ["goodput_per_s", "goodput_share", "goodput_count", "request_slo_ms"]  # client/goodput.py
    cols += [f"{lat}_{stat}_ms" for lat in LATENCIES for stat in _STATS]
    cols += TOKEN_CSV_COLUMNS  # generative runs (client/report_tokens.py)
    return [*cols, "early_stopping_estimate_ms", "errors", "reasons", "stable"]


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
            good = c.get("goodput") or {}
            row.update(goodput_per_s=good.get("rate_per_s"), goodput_share=good.get("share"),
                       goodput_count=good.get("good_count"), request_slo_ms=good.get("slo_ms"))  # fmt: skip
            for lat in LATENCIES:
                for stat in _STATS:
                    row[f"{lat}_{stat}_ms"] = c["latency_ms"][lat][stat]  # type: ignore[literal-required]
            row.update(token_csv_row(c))
            row["early_stopping_estimate_ms"] = c["verdict"]["early_stopping_estimate_ms"]
            row["errors"] = ";".join(f"{k}={v}" for k, v in sorted(c["errors"].items()))
            row["reasons"] = "; ".join(ch["name"] for ch in c["verdict"]["checks"] if not ch["passed"])
            steady = (scenario.get("evidence") or {}).get("stability")  # the scenario's, on each of its rows
            row["stable"] = "" if not steady or steady["stable"] is None else str(steady["stable"]).lower()
            writer.writerow(row)
    return buffer.getvalue()


def write_csv(doc: ResultsDoc, path: str | Path) -> None:
    write_atomic(path, csv_text(doc))


def write_reports(doc: ResultsDoc, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """summary.csv, report.html, perf_analyzer.csv and LoadGen's logs (``mlperf/<scenario>/``) in ``out_dir``
    (results.json is ``RunResult.write``'s job); ``plots=False``: the page without its plots."""
    from tailmark.client import outputs_mlperf, outputs_perf_analyzer
    from tailmark.client.report_html import write_html  # imports matplotlib when it draws: only when needed

    out = Path(out_dir)
    write_csv(doc, out / "summary.csv")
    write_html(doc, out / "report.html", plots=plots)
    familiar = outputs_perf_analyzer.write(doc, out) + outputs_mlperf.write(doc, out)
    return [out / "summary.csv", out / "report.html", *familiar]
