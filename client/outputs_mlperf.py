"""LoadGen-style logs: ``mlperf_log_summary.txt`` and ``mlperf_log_detail.txt`` for each MLPerf scenario of a run.

For every Server, Offline, SingleStream and MultiStream result, ``mlperf/<scenario>/`` in the run directory holds
the two files MLPerf LoadGen writes (``<scenario>`` is tailmark's name for it: ``server``, ``server-2``, ...), so
a user can diff a tailmark run against a LoadGen run line by line. The layout is LoadGen 6.0.17's, checked
against logs the real ``mlperf_loadgen`` wrote (``tests/golden/loadgen/``, and live in
``tests/client/test_outputs.py`` when the package is installed): the same lines in the same order, the same
``:::MLLOG {json}`` record shape. The numbers are tailmark's, from results.json:

- Server ``Completed samples per second``: ``sample_rate_per_s`` (successful samples over the window; LoadGen
  divides n - 1 by the last completion)
- Server ``Scheduled samples per second``: offered rate x samples per query x batch size (arrivals intended in the
  window over it)
- Offline ``Samples per second``: ``sample_rate_per_s`` (the window ends at the last completion, as LoadGen's)
- SingleStream ``90.0th percentile latency (ns)``, MultiStream ``99.0th``: that percentile of intended -> done (=
  sent -> done: a closed loop)
- SingleStream ``QPS w/ loadgen overhead`` / ``w/o``: queries over the window / 1 s over the mean latency
- ``Result is``, ``Performance constraints satisfied``, ``Min duration``, ``Min queries``, ``Early stopping
  satisfied``: the verdict of "all" and its checks ``latency_bound``, ``min_duration``, ``min_queries``,
  ``early_stopping``
- ``Recommendations``: the failing checks' recommendations (tailmark's words, including client_bound / host_noise /
  errors)
- ``Early Stopping Result``: from the early_stopping check and the verdict's estimate (LoadGen's rule,
  ``client/verdict.py``)
- Min / Max / Mean / percentile latency (ns): intended -> done from the histogram (bucket edges, LoadGen's rank
  rule), ms x 10^6
- Test Parameters Used: the effective settings; seeds are tailmark's ``sample_seed`` / ``schedule_seed``;
  ``max_async_queries`` is ``max_outstanding`` (1 in a closed loop)

Left out or zero, with no counterpart: the LoadGen build keys (``loadgen_version``, ``loadgen_git_*``), the QSL
(``qsl_rng_seed``, ``performance_sample_count`` and ``accuracy_*`` are printed as 0), ``generated_query_*``
(tailmark generates lazily), logger counters, ``power_*``, SingleStream's second estimate (``Early stopping
99.0th percentile estimate``, ``early_stopping_latency_ms``: it needs the histogram, not in results.json),
MultiStream's per-sample latencies (tailmark records the per-query latency, which MultiStream's metric is).
``requested_*`` keys are written only for settings the user gave. Failed requests are logged as
``error_runtime`` records and counted in the footer's ERRORS; the scenario's warnings as warnings.
Mode is always PerformanceOnly. Poisson, fixed-interval, trace and concurrency results are not MLPerf
scenarios and get no LoadGen log.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Final

from tailmark.client.results import ALL, PERCENTILES, ResultsDoc, ScenarioDoc, write_atomic
from tailmark.client.verdict import min_passing_queries

SUMMARY: Final = "mlperf_log_summary.txt"
DETAIL: Final = "mlperf_log_detail.txt"
FOLDER: Final = "mlperf"
SCENARIOS: Final = {
    "server": "Server",
    "offline": "Offline",
    "single-stream": "SingleStream",
    "multi-stream": "MultiStream",
}
_RULE: Final = "=" * 48
_ES_DETAIL = re.compile(r"(\d+) queries, (\d+) over")


def _yes(passed: bool | None) -> str:
    return "Yes" if passed else "NO"


def _ns(ms: float | None) -> int:
    return 0 if ms is None else round(ms * 1e6)


def _checks(scenario: ScenarioDoc) -> dict[str, dict[str, Any]]:
    return {c["name"]: dict(c) for c in scenario["classes"][ALL]["verdict"]["checks"]}


def sut_name(doc: ResultsDoc) -> str:
    target = doc["environment"].get("target") or {}
    model, address = target.get("model"), target.get("address")
    return f"{model}@{address}" if model and address else str(model or "tailmark")


def _samples_per_query(effective: dict[str, Any]) -> int:
    return int(effective.get("samples_per_query") or 1) * int(effective.get("batch_size") or 1)


def _largest_t(n: int, percentile: float) -> int:
    """LoadGen's t: the largest count over the estimate with min_passing_queries(t) <= n (n is enough for 1)."""
    lo, hi = 1, max(1, min(n, math.ceil(n * (1.0 - percentile / 100.0))))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if min_passing_queries(mid, percentile) <= n:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _early_stopping_lines(scenario: ScenarioDoc, name: str) -> list[str]:
    total = scenario["classes"][ALL]
    verdict = total["verdict"]
    check = _checks(scenario).get("early_stopping")
    pct = verdict["early_stopping_percentile"]
    if name == "Server":
        if check is None or check["passed"]:
            return [" * Run successful."]
        match = _ES_DETAIL.search(check["detail"])
        queries, over = (int(match[1]), int(match[2])) if match else (total["query_count"], 0)
        more = max(0, min_passing_queries(over, pct) - queries)
        return [
            " * Run unsuccessful.",
            f" * Processed {queries} queries.",
            f" * Would need to run at least {more} more queries,",
            " with the run being successful if every additional",
            " query were under latency.",
        ]
    n = total["ok_count"]
    needed = min_passing_queries(1, pct)
    if n < needed:
        return [f" * Only processed {n} queries.", f" * Need to process at least {needed} queries for early stopping."]
    lines = [
        f" * Processed at least {needed} queries ({n}).",
        f" * Would discard {_largest_t(n, pct) - 1} highest latency queries.",
    ]
    estimate = verdict["early_stopping_estimate_ms"]
    if estimate is not None:
        lines.append(f" * Early stopping {pct:.1f}th percentile estimate: {_ns(estimate)}")
    return lines


def summary_text(doc: ResultsDoc, scenario: ScenarioDoc) -> str:
    """LoadGen's mlperf_log_summary.txt for one MLPerf scenario of a results document."""
    name = SCENARIOS[scenario["settings"]["effective"]["scenario"]]
    effective = scenario["settings"]["effective"]
    total = scenario["classes"][ALL]
    latency = total["latency_ms"]["intended_to_done"]
    checks = _checks(scenario)
    valid = total["verdict"]["valid"]
    lines = [_RULE, "MLPerf Results Summary", _RULE, f"SUT name : {sut_name(doc)}", f"Scenario : {name}"]
    lines.append("Mode     : PerformanceOnly")
    match name:
        case "Server":
            lines.append(f"Completed samples per second    : {total['sample_rate_per_s']:.2f}")
        case "Offline":
            lines.append(f"Samples per second: {total['sample_rate_per_s']:.6g}")
        case "SingleStream":
            lines.append(f"90.0th percentile latency (ns) : {_ns(latency['p90'])}")
        case "MultiStream":
            lines.append(f"99.0th percentile latency (ns) : {_ns(latency['p99'])}")
    lines.append(f"Result is : {'VALID' if valid else 'INVALID'}")
    if name == "Server":
        lines.append(f"  Performance constraints satisfied : {_yes(checks.get('latency_bound', {}).get('passed'))}")
    lines.append(f"  Min duration satisfied : {_yes(checks['min_duration']['passed'])}")
    lines.append(f"  Min queries satisfied : {_yes(checks['min_queries']['passed'])}")
    lines.append(f"  Early stopping satisfied: {_yes(checks.get('early_stopping', {'passed': True})['passed'])}")
    if not valid:
        lines.append("Recommendations:")
        for check in checks.values():
            if not check["passed"] and check["recommendation"] and check["name"] != "early_stopping":
                lines.append(f" * {check['recommendation'].rstrip('.')}.")
    if name != "Offline":
        lines += ["Early Stopping Result:", *_early_stopping_lines(scenario, name)]
    lines += ["", _RULE, "Additional Stats", _RULE]
    match name:
        case "Server":
            scheduled = (total["offered_rate_qps"] or 0.0) * _samples_per_query(effective)
            lines.append(f"Scheduled samples per second : {scheduled:.2f}")
        case "SingleStream":
            mean_ns = _ns(latency["mean"])
            lines.append(f"QPS w/ loadgen overhead         : {total['achieved_rate_qps']:.2f}")
            lines.append(f"QPS w/o loadgen overhead        : {(1e9 / mean_ns if mean_ns else 0.0):.2f}")
            lines.append("")
        case "MultiStream":
            lines.append("Per-query latency:  ")
    lines.append(f"Min latency (ns)                : {_ns(latency['min'])}")
    lines.append(f"Max latency (ns)                : {_ns(latency['max'])}")
    lines.append(f"Mean latency (ns)               : {_ns(latency['mean'])}")
    for pct, key in zip(PERCENTILES, ("p50", "p90", "p95", "p97", "p99", "p99_9"), strict=True):
        lines.append(f"{pct:.2f} percentile latency (ns)   : {_ns(latency[key])}")  # type: ignore[literal-required]
    lines += ["", _RULE, "Test Parameters Used", _RULE]
    lines += [f"{k} : {v}" if not k.endswith(")") else f"{k}: {v}" for k, v in parameters_used(scenario).items()]
    warnings, errors = len(scenario["warnings"]), len(total["errors"])
    lines += ["", "No warnings encountered during test." if not warnings else
              f"{warnings} warning{'s' if warnings > 1 else ''} encountered. See detailed log."]  # fmt: skip
    lines += ["", "No errors encountered during test." if not errors else
              f"{errors} ERROR{'S' if errors > 1 else ''} encountered. See detailed log."]  # fmt: skip
    return "\n".join(lines) + "\n"


def parameters_used(scenario: ScenarioDoc) -> dict[str, Any]:
    """LoadGen's "Test Parameters Used" block, in its order, from the effective settings."""
    e = scenario["settings"]["effective"]
    name = SCENARIOS[e["scenario"]]
    closed = name in ("SingleStream", "MultiStream")
    samples = e["offline_sample_count"] if name == "Offline" else e["samples_per_query"]
    return {
        "samples_per_query": samples,
        "target_qps": _number(e.get("target_qps") or 0),
        "target_latency (ns)": round((e.get("latency_bound_ms") or 0) * 1e6),
        "max_async_queries": 1 if closed else (e.get("max_outstanding") or 0),
        "min_duration (ms)": round(e["min_duration_s"] * 1000),
        "max_duration (ms)": round((e.get("max_duration_s") or 0) * 1000),
        "min_query_count": e["min_query_count"],
        "max_query_count": e.get("max_query_count") or 0,
        "qsl_rng_seed": 0,
        "sample_index_rng_seed": e.get("sample_seed") or 0,
        "schedule_rng_seed": e.get("schedule_seed") or 0,
        "accuracy_log_rng_seed": 0,
        "accuracy_log_probability": 0,
        "accuracy_log_sampling_target": 0,
        "print_timestamps": 0,
        "performance_issue_unique": 0,
        "performance_issue_same": 0,
        "performance_issue_same_index": 0,
        "performance_sample_count": 0,
        "accuracy_sample_count": 0,
    }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --- the detail log ---


def _record(key: str, value: Any, time_ms: float, *, error: bool = False, warning: bool = False) -> str:
    metadata = {"is_error": error, "is_warning": warning, "file": "tailmark", "line_no": 0, "pid": os.getpid()}
    metadata["tid"] = metadata["pid"]
    body = {"key": key, "value": value, "time_ms": round(time_ms, 6), "namespace": "mlperf::logging",
            "event_type": "POINT_IN_TIME", "metadata": metadata}  # fmt: skip
    return ":::MLLOG " + json.dumps(body)


def detail_records(doc: ResultsDoc, scenario: ScenarioDoc) -> list[tuple[str, Any, dict[str, bool]]]:
    """(key, value, flags) of every detail record with a counterpart, in LoadGen's order."""
    e, requested = scenario["settings"]["effective"], scenario["settings"]["requested"]
    name = SCENARIOS[e["scenario"]]
    total = scenario["classes"][ALL]
    verdict = total["verdict"]
    checks = _checks(scenario)
    latency = total["latency_ms"]["intended_to_done"]
    pct = verdict["early_stopping_percentile"] or (99.0 if name in ("Server", "MultiStream") else 90.0)
    params = parameters_used(scenario)
    out: list[tuple[str, Any, dict[str, bool]]] = []

    def add(key: str, value: Any, **flags: bool) -> None:
        out.append((key, value, flags))

    add("test_datetime", doc["created_at"].replace("+00:00", "Z"))
    add("sut_name", sut_name(doc))
    for key, setting, scale in _REQUESTED.get(name, ()) + _REQUESTED_COMMON:
        if requested.get(setting) is not None:
            add(f"requested_{key}", _number(requested[setting] * scale) if scale != 1 else requested[setting])
    add("requested_scenario", name)
    add("requested_test_mode", "PerformanceOnly")
    add("effective_scenario", name)
    add("effective_test_mode", "PerformanceOnly")
    add("effective_samples_per_query", params["samples_per_query"])
    add("effective_target_qps", params["target_qps"])
    add("effective_target_latency_ns", params["target_latency (ns)"])
    add("effective_target_latency_percentile", round(pct / 100.0, 6))
    add("effective_max_async_queries", params["max_async_queries"])
    add("effective_target_duration_ms", params["min_duration (ms)"])
    add("effective_min_duration_ms", params["min_duration (ms)"])
    add("effective_max_duration_ms", params["max_duration (ms)"])
    add("effective_min_query_count", params["min_query_count"])
    add("effective_max_query_count", params["max_query_count"])
    add("effective_min_sample_count", params["min_query_count"])
    add("effective_sample_index_rng_seed", params["sample_index_rng_seed"])
    add("effective_schedule_rng_seed", params["schedule_rng_seed"])
    for warning in scenario["warnings"]:
        add("warning_generic_message", warning, is_warning=True)
    for status, count in sorted(total["errors"].items()):
        add("error_runtime", f"{count} requests failed with {status}", is_error=True)
    add("result_validity", "VALID" if verdict["valid"] else "INVALID")
    if name == "Server":
        add("result_perf_constraints_met", bool(checks.get("latency_bound", {}).get("passed")))
    add("result_min_duration_met", bool(checks["min_duration"]["passed"]))
    add("result_min_queries_met", bool(checks["min_queries"]["passed"]))
    add("early_stopping_met", bool(checks.get("early_stopping", {"passed": True})["passed"]))
    if name != "Offline":
        add("early_stopping_result", "".join(line + " " for line in _early_stopping_lines(scenario, name)).rstrip())
    add("result_query_count", total["query_count"])
    match name:
        case "Server":
            match = _ES_DETAIL.search(checks.get("early_stopping", {}).get("detail", ""))
            if match:
                add("result_overlatency_query_count", int(match[2]))
            scheduled = (total["offered_rate_qps"] or 0.0) * _samples_per_query(e)
            add("result_scheduled_samples_per_sec", round(scheduled, 2))
            add("result_completed_samples_per_sec", round(total["sample_rate_per_s"], 2))
        case "Offline":
            add("result_samples_per_second", round(total["sample_rate_per_s"], 2))
        case "SingleStream":
            mean_ns = _ns(latency["mean"])
            add("result_qps_with_loadgen_overhead", round(total["achieved_rate_qps"], 2))
            add("result_qps_without_loadgen_overhead", round(1e9 / mean_ns, 2) if mean_ns else 0.0)
            if verdict["early_stopping_estimate_ms"] is not None:
                add("early_stopping_latency_ss", _ns(verdict["early_stopping_estimate_ms"]))
        case "MultiStream":
            if verdict["early_stopping_estimate_ms"] is not None:
                add("early_stopping_latency_ms", _ns(verdict["early_stopping_estimate_ms"]))
    per = "_query" if name == "MultiStream" else ""
    add(f"result_min{per}_latency_ns", _ns(latency["min"]))
    add(f"result_max{per}_latency_ns", _ns(latency["max"]))
    add(f"result_mean{per}_latency_ns", _ns(latency["mean"]))
    per = "_per_query" if name == "MultiStream" else ""
    for p, key in zip(PERCENTILES, ("p50", "p90", "p95", "p97", "p99", "p99_9"), strict=True):
        add(f"result_{p:.2f}_percentile{per}_latency_ns", _ns(latency[key]))  # type: ignore[literal-required]
    add("num_errors", len(total["errors"]))
    return out


# (LoadGen key after "requested_", tailmark setting, scale)
_REQUESTED_COMMON: Final = (
    ("min_duration_ms", "min_duration_s", 1000),
    ("max_duration_ms", "max_duration_s", 1000),
    ("min_query_count", "min_query_count", 1),
    ("max_query_count", "max_query_count", 1),
    ("sample_index_rng_seed", "sample_seed", 1),
    ("schedule_rng_seed", "schedule_seed", 1),
)
_REQUESTED: Final = {
    "Server": (
        ("server_target_qps", "target_qps", 1),
        ("server_target_latency_ns", "latency_bound_ms", 1_000_000),
        ("server_target_latency_percentile", "early_stopping_percentile", 0.01),
        ("server_max_async_queries", "max_outstanding", 1),
    ),
    "Offline": (("offline_expected_qps", "target_qps", 1),),
    "SingleStream": (("single_stream_target_latency_percentile", "early_stopping_percentile", 0.01),),
    "MultiStream": (
        ("multi_stream_samples_per_query", "samples_per_query", 1),
        ("multi_stream_target_latency_percentile", "early_stopping_percentile", 0.01),
    ),
}


def detail_text(doc: ResultsDoc, scenario: ScenarioDoc) -> str:
    """LoadGen's mlperf_log_detail.txt: one ``:::MLLOG {json}`` line per record (settings at 0 ms, results at
    the end of the window)."""
    end_ms = scenario["duration_s"] * 1000.0
    lines = []
    for key, value, flags in detail_records(doc, scenario):
        at = end_ms if key.startswith(("result_", "early_stopping", "num_", "error_", "warning_")) else 0.0
        lines.append(
            _record(key, value, at, error=flags.get("is_error", False), warning=flags.get("is_warning", False))
        )
    return "\n".join(lines) + "\n"


def write(doc: ResultsDoc, out_dir: str | Path) -> list[Path]:
    """``mlperf/<scenario>/mlperf_log_{summary,detail}.txt`` for each MLPerf scenario with results."""
    written = []
    seen: dict[str, int] = {}
    for scenario in doc["scenarios"]:
        kind = scenario["settings"]["effective"]["scenario"]
        seen[kind] = seen.get(kind, 0) + 1
        if kind not in SCENARIOS or not scenario["classes"][ALL]["query_count"]:
            continue
        folder = Path(out_dir) / FOLDER / (kind if seen[kind] == 1 else f"{kind}-{seen[kind]}")
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / SUMMARY, summary_text(doc, scenario))
        write_atomic(folder / DETAIL, detail_text(doc, scenario))
        written += [folder / SUMMARY, folder / DETAIL]
    return written
