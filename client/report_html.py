"""report.html: one self-contained page per run (inline CSS and base64 PNGs, no external URL).

Top: what was measured, the summary table and the run's own notes (endpoint, calibration, repeats), then where
the time went (client, network, server phases). Then one section per scenario: its verdict, reasons and
evidence as the console prints them, its latency spectrum per traffic class and its send-lag spectrum, latency
and throughput over time from the interval log with the host probe beside them, and the endpoint's scraped
metrics. A run that is a step of a sweep links the sweep's page (its curve).

``write_html`` reads what it plots from the run directory: results (passed in), ``latency.hlog`` and
``metrics.json``; a file that is missing only leaves its figure out. Without matplotlib the page has the
tables and notes and says how to get the plots.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
from pathlib import Path
from typing import Any

from tailmark.client import report_plots, report_server
from tailmark.client.recorder import scenario_keys
from tailmark.client.repeat import summary_lines
from tailmark.client.report import (
    _HEADER,
    _calibration_lines,
    _label,
    _notes,
    _num,
    _result,
    _row_label,
    _rows,
    _sent_legend,
)
from tailmark.client.report_tokens import token_table_html
from tailmark.client.results import ResultsDoc, ScenarioDoc, write_atomic
from tailmark.client.scenario_routes import endpoint_lines, endpoint_notes
from tailmark.client.timeline import FILE_NAME as TIMELINE
from tailmark.client.timeline import Slice, around_window, read_slices

CSS = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1320px}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}td.t,th.t{text-align:left}"
    ".VALID{color:#070}.INVALID{color:#b00;font-weight:bold}"
    "pre{background:#f6f6f6;padding:8px;white-space:pre-wrap;font-size:12px}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:8px;align-items:start}"
    ".grid img{max-width:100%;height:auto}h2{border-top:2px solid #ccc;padding-top:.4em}nav a{margin-right:1em}"
)


class RunFiles:
    """What the run directory holds beside results.json, read once for the page."""

    def __init__(self, folder: Path | None) -> None:
        self.metrics: dict[str, Any] | None = None
        self.latency: dict[str, list[Slice]] = {}
        self.send_lag: dict[str, list[Slice]] = {}
        self.sweep = False  # the folder is a step of a sweep (its parent holds sweep.json)
        self.folder = folder
        if folder is None:
            return
        with contextlib.suppress(OSError, ValueError):  # the server metrics the run scraped
            self.metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        self.latency = read_slices(folder / TIMELINE, "intended_to_done")
        self.send_lag = read_slices(folder / TIMELINE, "send_lag")
        self.sweep = (folder.parent / "sweep.json").exists()


def _img(alt: str, data: str | None) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>" if data else ""


def _summary_table(doc: ResultsDoc) -> str:
    esc = html.escape
    good = any(c.get("goodput") for s in doc["scenarios"] for c in s["classes"].values())  # client/goodput.py
    head = (*_HEADER[:4], "goodput/s", *_HEADER[4:]) if good else _HEADER
    rows = ["<table><tr>" + "".join(f"<th class='{'t' if i < 2 else ''}'>{esc(h)}</th>"
                                    for i, h in enumerate((*head, "result"))) + "</tr>"]  # fmt: skip
    for index, scenario in enumerate(doc["scenarios"]):
        for name, c in _rows(scenario):
            lat, lag = c["latency_ms"]["intended_to_done"], c["latency_ms"]["send_lag"]
            rate = [_num(c["achieved_rate_qps"], 1)]
            if good:
                rate.append(_num((c.get("goodput") or {}).get("rate_per_s"), 1))
            cells = [*rate, *(_num(lat[k]) for k in ("p50", "p90", "p99", "p99_9"))]
            cells = [str(c["query_count"]), *cells, _num(lag["p99"]), str(c["error_count"])]
            result = c["verdict"]["result"]
            rows.append(f"<tr><td class='t'><a href='#s{index}'>{esc(_row_label(scenario))}</a></td>"
                        f"<td class='t'>{esc(name)}</td>" + "".join(f"<td>{v}</td>" for v in cells)
                        + f"<td class='t {result}'>{esc(_result(c))}</td></tr>")  # fmt: skip
    return "".join(rows) + "</table>"


def _breakdown_table(scenarios: list[ScenarioDoc]) -> str:
    rows = [(s, parts) for s in scenarios if (parts := report_server.breakdown(s)) is not None]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in report_server.PARTS)
    body = [f"<tr><th class='t'>scenario</th>{head}<th>sum</th></tr>"]
    for s, parts in rows:
        cells = "".join(f"<td>{_num(parts[key])}</td>" for key, _, _ in report_server.PARTS)
        body.append(f"<tr><td class='t'>{html.escape(_label(s))}</td>{cells}<td>{_num(sum(parts.values()))}</td></tr>")
    return "<table>" + "".join(body) + "</table><p>mean ms per request</p>"


# A run rewrites its page after every scenario: a finished scenario's section is drawn again only when what it
# shows changed (its results, or intervals and scrapes that reached the files since), not once per later scenario.
_SECTIONS: dict[tuple[str, int], tuple[str, str]] = {}


def _scenario_section(plt: Any, index: int, key: str, scenario: ScenarioDoc, files: RunFiles, doc: ResultsDoc) -> str:
    window = (scenario.get("evidence") or {}).get("window_in_log_s")
    window = tuple(window) if window else None
    latency = around_window(files.latency.get(key, []), window)  # the log keeps adding empty intervals after it
    lag = around_window(files.send_lag.get(key, []), window)
    args = (plt, index, scenario, files, doc, latency, lag, window)
    if files.folder is None:
        return _draw_section(*args)
    scraped = (files.metrics or {}).get("scenarios") or []
    shown = [scenario, [(s.start_s, s.count) for s in latency], [(s.start_s, s.count) for s in lag]]
    shown += [scraped[index] if index < len(scraped) else None, plt is None]
    fingerprint = hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()
    cached = _SECTIONS.get((str(files.folder), index))
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    section = _draw_section(*args)
    _SECTIONS[(str(files.folder), index)] = (fingerprint, section)
    return section


def _breakdown_figure(plt: Any, doc: ResultsDoc, files: RunFiles) -> str:
    """The whole run's time breakdown plot, drawn again only when the scenarios changed (a run rewrites its report
    after every scenario)."""
    if files.folder is None:
        return _img("time per request by part", report_server.breakdown_png(plt, doc["scenarios"]))
    fingerprint = hashlib.sha256(json.dumps(doc["scenarios"], sort_keys=True, default=str).encode()).hexdigest()
    cached = _SECTIONS.get((str(files.folder), -1))
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, _img("time per request by part", report_server.breakdown_png(plt, doc["scenarios"])))
        _SECTIONS[(str(files.folder), -1)] = cached
    return cached[1]


def _draw_section(
    plt: Any,
    index: int,
    scenario: ScenarioDoc,
    files: RunFiles,
    doc: ResultsDoc,
    latency: list[Slice],
    lag: list[Slice],
    window: tuple[float, float] | None,
) -> str:
    esc = html.escape
    total = scenario["classes"]["all"]
    parts = [f"<h2 id='s{index}'>{esc(_label(scenario))}: <span class='{total['verdict']['result']}'>"
             f"{esc(_result(total))}</span></h2>"]  # fmt: skip
    notes = "\n".join(_notes(scenario)).strip()
    if notes:
        parts.append(f"<pre>{esc(notes)}</pre>")
    if plt is None:
        return "".join(parts)
    figures = [
        _img("latency by percentile per traffic class", report_plots.spectrum_png(plt, scenario)),
        _img("send lag by percentile", report_plots.send_lag_png(plt, scenario)),
        _img("latency over time with the host probe", report_plots.timeline_png(plt, scenario, latency, lag, window)),
    ]
    scraped = (files.metrics or {}).get("scenarios") or []  # one entry per scenario, in the same order
    if index < len(scraped):
        series = {"url": files.metrics.get("url"), **scraped[index]}  # type: ignore[union-attr]
        model = (doc["environment"].get("target") or {}).get("model")
        figures.append(_img("server metrics", report_server.server_metrics_png(plt, scenario, series, model)))
    parts.append("<div class='grid'>" + "".join(f"<div>{f}</div>" for f in figures if f) + "</div>")
    return "".join(parts)


def html_report(doc: ResultsDoc, *, plots: bool = True, folder: Path | None = None) -> str:
    """The page for ``doc``; ``folder``: the run directory, whose interval log and metrics are plotted."""
    esc = html.escape
    plt = report_plots.pyplot() if plots else None
    files = RunFiles(folder)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>tailmark report</title>"]
    parts.append(f"<style>{CSS}</style></head><body><h1>tailmark report</h1>")
    env = doc["environment"]
    facts = [f"{k}: {env.get(k)}" for k in ("hostname", "cpu_model", "cpu_count_logical", "python", "os")]
    target, transport, pinning = env.get("target"), env.get("client_transport"), env.get("pinning")
    endpoints = env.get("endpoints") or []
    if len(endpoints) > 1:  # scenarios with their own endpoints (client/scenario_routes.py)
        named = (f"{e['transport']} {e['address']} model {e['model']}" for e in endpoints)
        facts.append("endpoints: " + ", ".join(named))
    elif target:  # what was measured, and through which client transport (older results lack these)
        built_in = " (built-in server)" if target.get("embedded") else ""
        facts.append(f"target: {target.get('address')}{built_in} model {target.get('model')} v{target.get('version')}")
    if transport and len(endpoints) < 2:
        facts.append(f"transport: {transport.get('kind')} x{transport.get('connections')}")
    if pinning:
        facts.append(f"pinned: server CPUs {pinning['server_cpus']}, client CPUs {pinning['client_cpus']}")
    parts.append(f"<p>{esc(' · '.join(facts))}<br>created {esc(doc['created_at'])}, updated {esc(doc['updated_at'])}")
    if not doc["complete"]:
        parts.append(f" — <b>partial result</b>{': ' + esc(doc['interrupted']) if doc['interrupted'] else ''}")
    parts.append("</p>")
    if files.sweep:
        parts.append("<p>This run is one step of a sweep: <a href='../report.html'>the sweep's latency-throughput "
                     "curve and its other steps</a>.</p>")  # fmt: skip
    links = "".join(f"<a href='#s{i}'>{esc(_label(s))}</a>" for i, s in enumerate(doc["scenarios"]))
    parts.append(f"<nav>scenarios: {links}<a href='#breakdown'>where the time went</a></nav>")
    parts.append(_summary_table(doc))
    parts.append(token_table_html(doc))  # generative runs (client/report_tokens.py)
    parts += [f"<p class='legend'>{esc(line)}</p>" for line in _sent_legend(doc) + endpoint_lines(doc)]
    run_notes = endpoint_notes(doc) + _calibration_lines(doc)
    if doc.get("repeats"):
        run_notes += summary_lines(doc["repeats"])  # type: ignore[arg-type]
    if run_notes:
        parts.append(f"<pre>{esc(chr(10).join(run_notes).strip())}</pre>")
    if plots and plt is None:
        parts.append("<p>(plots need matplotlib: pip install tailmark[plot])</p>")
    elif not plots:  # drawing them takes seconds a run: a search's steps leave them to whoever looks
        parts.append("<p>(plots not drawn for this run: <code>tailmark report DIR</code> draws them)</p>")
    parts.append("<h2 id='breakdown'>Where the time went</h2>")
    table = _breakdown_table(doc["scenarios"])
    figure = _breakdown_figure(plt, doc, files) if plt else ""
    if table:
        parts.append(f"{figure}{table}<p>Client send lag: intended → sent. Network + frontends: sent → done minus "
                     "the server's request time. Server phases: its ModelStatistics over the scenario, warm-up "
                     "included.</p>")  # fmt: skip
    else:
        parts.append("<p>No server-side statistics (the endpoint offers no statistics extension).</p>")
    keys = scenario_keys(s["scenario"] for s in doc["scenarios"])  # the interval log's names, as the run gave them
    for index, (key, scenario) in enumerate(zip(keys, doc["scenarios"], strict=True)):
        parts.append(_scenario_section(plt, index, key, scenario, files, doc))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(doc: ResultsDoc, path: str | Path, *, plots: bool = True) -> None:
    """report.html at ``path``, with the run directory around it read for the plots."""
    target = Path(path)
    write_atomic(target, html_report(doc, plots=plots, folder=target.parent))
