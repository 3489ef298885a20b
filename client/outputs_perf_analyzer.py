"""perf_analyzer.csv: a run's scenarios as the CSV that perf_analyzer writes with ``-f`` and ``--verbose-csv``.

The columns, their order and their units are perf_analyzer's own (its ``ReportWriter::GenerateReport`` and
docs/measurements_metrics.md), so a spreadsheet or script made for perf_analyzer reads this file unchanged::

    Request Rate,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,
    Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,
    Avg latency,request/response,response wait

The first column is ``Concurrency`` instead when every row is a closed loop. Times are whole microseconds,
truncated as perf_analyzer truncates (``ns / 1000`` in integers); rates print with six significant digits, as
its C++ stream does. Rows are sorted by increasing Inferences/Second, as perf_analyzer sorts them.

One row per scenario of the run (its "all" class), from the results document:

- Request Rate: the open-loop scenario's target QPS (a trace: its offered rate over the window)
- Concurrency: requests in flight: 1 for single-stream, samples_per_query for multi-stream, ``concurrency`` for the
  concurrency scenario
- Inferences/Second: ``sample_rate_per_s``: successful samples (requests x batch size) per second of the window
- Client Send: **empty**: tailmark serialises requests before their instant and does not time the send apart from
  the wait
- Network+Server Send/Recv: mean sent -> done minus the server's queue + compute input/infer/output, floored at 0
  (perf_analyzer's own subtraction, with its floor); empty without server statistics
- Server Queue / Compute Input / Compute Infer / Compute Output: the ModelStatistics difference over the scenario
  (``server_stats.mean_us``: each phase's time over the successful requests); empty when the endpoint has no
  statistics extension
- Client Recv: **empty**, as Client Send
- p50 / p90 / p95 / p99 latency: intended -> done at those percentiles (LoadGen's rank rule, bucket upper edges). In
  an open loop this is **not** what perf_analyzer measures: it starts its clock at the actual send, which hides send
  lag; tailmark's headline counts it. In a closed loop intended = sent, so the two agree
- Avg latency: mean intended -> done
- request/response: **empty**: perf_analyzer's send + receive time, not measured apart
- response wait: mean sent -> done, perf_analyzer's "time waiting for the response"

Offline has no perf_analyzer counterpart and gets no row. When a run mixes open- and closed-loop scenarios,
the closed-loop rows go to ``perf_analyzer_concurrency.csv`` (perf_analyzer writes one mode per file).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Final

from tailmark.client.results import ALL, ResultsDoc, ScenarioDoc, write_atomic

FILE_NAME: Final = "perf_analyzer.csv"
CONCURRENCY_FILE_NAME: Final = "perf_analyzer_concurrency.csv"
COLUMNS: Final = (
    "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
    "Server Compute Infer", "Server Compute Output", "Client Recv", "p50 latency", "p90 latency", "p95 latency",
    "p99 latency", "Avg latency", "request/response", "response wait",
)  # fmt: skip
REQUEST_RATE: Final = "Request Rate"
CONCURRENCY: Final = "Concurrency"
_OPEN_LOOP: Final = frozenset({"server", "poisson", "fixed-interval", "trace"})
_CLOSED_LOOP: Final = frozenset({"single-stream", "multi-stream", "concurrency"})
_PHASES: Final = ("queue", "compute_input", "compute_infer", "compute_output")


def _g6(value: float) -> str:
    """A double as C++'s default ostream prints it (six significant digits, no trailing zeros)."""
    return f"{value:.6g}"


def _us(ms: float | None) -> str:
    return "" if ms is None else str(math.floor(ms * 1000 + 1e-9))


def _load(scenario: ScenarioDoc) -> str:
    """The first column's value: the request rate (open loop) or the concurrency (closed loop)."""
    effective = scenario["settings"]["effective"]
    match scenario["settings"]["effective"]["scenario"]:
        case "single-stream":
            return "1"
        case "multi-stream":
            return str(effective["samples_per_query"])
        case "concurrency":
            return str(effective.get("concurrency") or 1)
        case "trace":
            return _g6(scenario["classes"][ALL]["offered_rate_qps"] or 0.0)
        case _:
            return _g6(effective["target_qps"] or 0.0)


def row(scenario: ScenarioDoc) -> list[str]:
    """One CSV row (first column included) for one scenario of a results document."""
    total = scenario["classes"][ALL]
    latency, service = total["latency_ms"]["intended_to_done"], total["latency_ms"]["sent_to_done"]
    stats = scenario.get("server_stats")
    phases = ["", "", "", ""]
    network = ""
    if stats and stats.get("requests"):
        mean_us = stats["mean_us"]
        phases = [str(math.floor(mean_us.get(p, 0.0))) for p in _PHASES]
        if service["mean"] is not None:
            network = str(max(0, math.floor(service["mean"] * 1000 - sum(mean_us.get(p, 0.0) for p in _PHASES))))
    return [
        _load(scenario), _g6(total["sample_rate_per_s"]), "", network, *phases, "",
        _us(latency["p50"]), _us(latency["p90"]), _us(latency["p95"]), _us(latency["p99"]),
        _us(latency["mean"]), "", _us(service["mean"]),
    ]  # fmt: skip


def _table(first: str, scenarios: list[ScenarioDoc]) -> str:
    rows = sorted((row(s) for s in scenarios), key=lambda r: float(r[1]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([first, *COLUMNS])
    writer.writerows(rows)
    return buffer.getvalue()


def tables(doc: ResultsDoc) -> dict[str, str]:
    """File name -> CSV text; empty when the run has no scenario perf_analyzer could have run."""
    measured = [s for s in doc["scenarios"] if s["classes"][ALL]["ok_count"]]
    open_loop = [s for s in measured if s["settings"]["effective"]["scenario"] in _OPEN_LOOP]
    closed = [s for s in measured if s["settings"]["effective"]["scenario"] in _CLOSED_LOOP]
    out = {}
    if open_loop:
        out[FILE_NAME] = _table(REQUEST_RATE, open_loop)
    if closed:
        out[CONCURRENCY_FILE_NAME if open_loop else FILE_NAME] = _table(CONCURRENCY, closed)
    return out


def write(doc: ResultsDoc, out_dir: str | Path) -> list[Path]:
    """Write perf_analyzer.csv (and perf_analyzer_concurrency.csv for a mixed run) into ``out_dir``."""
    written = []
    for name, text in tables(doc).items():
        write_atomic(Path(out_dir) / name, text)
        written.append(Path(out_dir) / name)
    return written
