"""A sweep's page: ``report.html`` in a sweep's directory, from its sweep.json and the curve.png the sweep drew.

The curve itself is client/sweep.py's (``plot_curve``); this page inlines that PNG rather than drawing it again,
beside the per-step table with a link to each step's own report and the knee. Self-contained like a run's page.
``tailmark report SWEEP_DIR`` rewrites it.
"""

from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path
from typing import Any

from tailmark.client.report import SENT_LEGEND, SENT_MARK, _num
from tailmark.client.report_html import CSS
from tailmark.client.results import write_atomic


def sweep_html(doc: dict[str, Any], curve_png: bytes | None = None) -> str:
    """A sweep's page from its sweep.json: the latency-throughput curve (the sweep's curve.png, inlined), the
    per-step table with a link to each step's own report, and the knee. Self-contained like ``html_report``."""
    from tailmark.client.sweep import Knee, knee_text

    esc = html.escape
    steps, found = doc["steps"], Knee(**doc["knee"])
    closed = doc["kind"] == "concurrency"
    title = f"tailmark sweep: latency vs throughput over {'concurrency' if closed else 'request rate'}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"]
    parts.append(f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>")
    state = "complete" if doc["complete"] else "<b>partial</b>" + (f": {esc(doc['stopped'])}" if doc["stopped"] else "")
    parts.append(f"{len(steps)} steps, {state}. {esc(knee_text(found))}</p>")
    servers = sorted({s.get("server") or "" for s in steps} - {""})  # sweeps from before the field lack it
    if servers:
        parts.append(f"<p>server: {esc('; '.join(servers))}</p>")
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


def report_sweep_dir(folder: str | Path) -> tuple[str, list[Path]]:
    """``tailmark report SWEEP_DIR``: every step's own files again, then the sweep's page; returns the curve's
    console table and the files written. Raises ``ValueError`` for a sweep.json it cannot read."""
    from tailmark.client.report import write_reports
    from tailmark.client.results import ResultsError, load_results
    from tailmark.client.sweep import Knee, Step, table

    root = Path(folder)
    try:
        doc = json.loads((root / "sweep.json").read_text(encoding="utf-8"))
        steps, found = [Step(**s) for s in doc["steps"]], Knee(**doc["knee"])
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{root / 'sweep.json'}: not a sweep's file ({exc})") from None
    written: list[Path] = []
    for step in steps:
        step_dir = root / step.run_dir
        try:
            written += write_reports(load_results(step_dir / "results.json"), step_dir)
        except (ResultsError, OSError) as exc:  # a step that wrote no results keeps its row in the curve
            print(f"tailmark report: step {step.step}: {exc}", file=sys.stderr)
    written.append(write_sweep_html(root))
    return table(steps, found), written
