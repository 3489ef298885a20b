"""``tailmark run`` (measure), ``tailmark report`` (show a run again) and ``tailmark merge``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import math
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tailmark.client.generative_cli import TOKEN_SETTING_FLAGS, add_generative_args, token_settings
from tailmark.client.search import register as register_search
from tailmark.client.settings import Scenario
from tailmark.client.slo import parse_duration_ms
from tailmark.client.sweep import register as register_sweep
from tailmark.client.workers import add_split_flags

TRANSPORTS = ("h2", "grpc", "http", "openai", "grpc-stream")
GENERATIVE_TRANSPORTS = ("openai", "grpc-stream")  # answers measured in tokens (client/generative_cli.py)

EMBEDDED_SCENARIOS = ("single-stream", "multi-stream", "server", "offline", "fixed-interval", "trace")
ENDPOINT_SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
EMBEDDED_MODEL = "resnet"
EMBEDDED_LLM = "synth-llm"  # the built-in server's generative model: the default of the generative transports


def embedded_model(transport: str | None) -> str:
    """The built-in server's model a run without --model measures."""
    return EMBEDDED_LLM if transport in GENERATIVE_TRANSPORTS else EMBEDDED_MODEL


EMBEDDED_TRACE = Path(__file__).resolve().parents[1] / "traces" / "samples" / "azure_conv_5min.jsonl"
EXIT_INVALID = 3
EXIT_INTERRUPTED = 130

# flag -> ScenarioSettings field
SETTING_FLAGS: dict[str, tuple[str, type, str]] = {
    "--target-qps": ("target_qps", float, "offered load of open-loop scenarios and Offline's expected rate"),
    "--latency-bound-ms": ("latency_bound_ms", float, "tail-latency bound (Server default 10)"),
    "--percentile": ("early_stopping_percentile", float, "percentile the bound applies to"),
    "--duration": ("min_duration_s", float, "minimum measured seconds per scenario (default 10)"),
    "--max-duration": ("max_duration_s", float, "stop a scenario after this many seconds (0: none)"),
    "--min-queries": ("min_query_count", int, "minimum queries per scenario"),
    "--max-queries": ("max_query_count", int, "stop after this many queries (0: none)"),
    "--warmup": ("warmup_s", float, "unmeasured seconds before each scenario (default 2)"),
    "--max-outstanding": ("max_outstanding", int, "cap on requests in flight (0: none; Offline 128)"),
    "--batch-size": ("batch_size", int, "samples per request"),
    "--samples-per-query": ("samples_per_query", int, "MultiStream samples per query (default 8)"),
    "--offline-samples": ("offline_sample_count", int, "samples in the Offline query"),
    "--trace": ("trace_path", str, "trace file for the trace scenario"),
    "--speed": ("trace_speed", float, "replay the trace this many times faster"),
    "--resize-inputs": (
        "resize_inputs",
        str,
        "which inputs a trace's token counts resize: auto (default: inputs with a variable dim and an integer or "
        "BYTES type, i.e. token ids or text), tokens (every variable-size input), none (keep the samples' shapes)",
    ),
    "--concurrency": ("concurrency", int, "concurrency scenario: requests in flight, each sent when one completes"),
    "--think-time-ms": ("think_time_ms", float, "concurrency scenario: pause before a slot sends again (default 0)"),
    "--rate-cap-qps": ("rate_cap_qps", float, "concurrency scenario: never send faster than this (0: no cap)"),
    "--send-lag-bound-ms": ("send_lag_bound_ms", float, "send-lag p99 above this: client-bound (default 1)"),
    "--seed": ("schedule_seed", int, "seed of the arrival schedule"),
    "--sample-seed": ("sample_seed", int, "seed of sample selection"),
    "--timeout": ("request_timeout_s", float, "per-request deadline in seconds (default 30)"),
    "--request-slo": (
        "request_slo_ms",
        parse_duration_ms,  # type: ignore[dict-item]
        "goodput's per-request SLO, e.g. 100ms: requests/s done within it, failures as misses (default: the "
        "latency bound; a trace's deadlines count too)",
    ),
}
SETTING_FLAGS.update(TOKEN_SETTING_FLAGS)  # token bounds and goodput SLOs (client/generative_cli.py)


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run",
        help="measure an endpoint (or, with no --target, the built-in server)",
        description="Open-loop load generation against a KServe-v2 gRPC endpoint, with LoadGen's scenarios and "
        "validity rules. With no --target, starts `tailmark serve` on a free port and runs every scenario.",
    )
    run.add_argument(
        "--target",
        help="HOST:PORT of a KServe-v2 gRPC endpoint, or http(s)://HOST:PORT with --transport http "
        "(default: start the built-in server)",
    )
    run.add_argument(
        "--model", help=f"model name (built-in default: {EMBEDDED_MODEL}; {EMBEDDED_LLM} with --transport openai)"
    )
    run.add_argument("--model-version", default="", help="model version (default: the newest)")
    run.add_argument(
        "--scenario", action="append", choices=[str(s) for s in Scenario], help="scenario to run (repeatable)"
    )
    run.add_argument("--config", type=Path, help="YAML settings file (flags win)")
    run.add_argument("--mlperf", action="store_true", help="official minimum durations and counts")
    for flag, (_, kind, text) in SETTING_FLAGS.items():
        run.add_argument(flag, type=kind, help=text)
    run.add_argument("--input-data", type=Path, help="samples from .npy/.npz/.json instead of random tensors")
    run.add_argument("--shape", action="append", default=[], help="NAME:D1,D2 shape of a variable-size input")
    run.add_argument("--pool-size", type=int, default=64, help="distinct random samples (default 64)")
    run.add_argument(
        "--validate",
        choices=("basic", "full", "none"),
        default="basic",
        help="check each OK answer: basic (default): outputs, datatypes, shapes and byte sizes against the model's "
        "metadata; full: also compare every answer with the first answer to the same request (first 64 distinct "
        "requests; floats to 1e-3 relative, FP16/BF16 1e-2; tens of µs of client CPU each); none: no check. "
        "A failed check counts as error BAD_RESPONSE",
    )
    _add_connection_args(run)
    add_generative_args(run)
    run.add_argument("--out", type=Path, help="run directory (default runs/<time>-<model>)")
    run.add_argument("--fail-on-invalid", action="store_true", help=f"exit {EXIT_INVALID} if any result is INVALID")
    run.add_argument(
        "--repeat", type=int, default=1, help="run the scenario list K times, seeds + k-1 in repeat k; the summary "
        "gives the median and min..max of each number (default 1)",
    )  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no live progress line")
    run.add_argument("--no-plots", dest="without_plots", action="store_true",
                     help="report.html with its tables only (drawing the plots takes seconds a scenario); "
                     "`tailmark report DIR` draws them later")  # fmt: skip
    run.add_argument(
        "--per-request-log", action="store_true", help="also write requests.jsonl: one line per measured request"
    )
    run.add_argument(
        "--metrics-url", help="scrape this Prometheus text endpoint (http://HOST:PORT/metrics) during each scenario "
        "(built-in default: the built-in server's); series in metrics.json, summary in results.json, plot in report",
    )  # fmt: skip
    run.add_argument("--metrics-interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    run.add_argument(
        "--metrics-series", metavar="REGEX", help="also keep the series whose whole name matches REGEX (default: "
        "Triton's queue time, successes, pending requests and GPU utilisation)",
    )  # fmt: skip
    run.add_argument(
        "--stability-percentage", type=float, metavar="P", help="perf_analyzer's within-run stability check: over "
        "the last windows of each scenario, max/min of the rate and of the mean latency within 1 + P/100 (its "
        "default: 10); reported in results.json, the summary and the report, never changes the verdict",
    )  # fmt: skip
    run.add_argument("--stability-windows", type=int, metavar="N", help="windows the check judges (default 3)")
    run.add_argument("--stability-window-s", type=float, metavar="S", help="seconds per window (default 2)")
    run.add_argument("--no-calibration", action="store_true", help="skip measuring this client's ceiling (~2 s)")
    run.add_argument(
        "--no-host-probe", action="store_true", help="no host-noise probe (then the host is never blamed for lateness)"
    )
    run.add_argument(
        "--no-pin", action="store_true", help="built-in default: do not pin the server and the client to separate CPUs"
    )
    run.set_defaults(handler=run_command)
    register_sweep(subparsers, run)  # tailmark sweep: every flag of run, one run per load level
    register_search(subparsers, run)  # tailmark search: the highest rate under an SLO, over sweep's step runner
    add_split_flags(run)  # --workers, --shard, --start-at (client/workers.py): not copied to sweep and search

    report = subparsers.add_parser(
        "report", help="print a run's table again and rewrite its HTML report (a sweep's: every step's and the curve's)"
    )
    report.add_argument("run", type=Path, help="run directory, its results.json, or a sweep's directory")
    report.set_defaults(handler=report_command)

    accuracy = subparsers.add_parser(
        "accuracy",
        help="accuracy mode: every sample once, top-1 against labels",
        description="LoadGen's accuracy mode: send every sample of --input-data once and compare the top-1 class "
        "of --output with --labels.",
    )
    accuracy.add_argument("--target", required=True, help="HOST:PORT of a KServe-v2 gRPC endpoint")
    accuracy.add_argument("--model", required=True, help="model name")
    accuracy.add_argument("--model-version", default="", help="model version (default: the newest)")
    accuracy.add_argument("--input-data", type=Path, help="samples: .npy, .npz or .json (not with --lm)")
    accuracy.add_argument("--labels", type=Path, help=".npy of integer class indices, one per sample (not with --lm)")
    accuracy.add_argument("--output", help="output tensor holding class scores (default: the model's first)")
    accuracy.add_argument("--batch-size", type=int, default=8, help="samples per request when the model batches")
    accuracy.add_argument("--min-top1", type=float, help=f"exit {EXIT_INVALID} if top-1 accuracy is below this")
    accuracy.add_argument("--out", type=Path, help="write the result as JSON here")
    accuracy.add_argument("--timeout", type=float, default=30.0, help="per-request deadline in seconds")
    _add_connection_args(accuracy)
    from tailmark.client.accuracy_lm import add_lm_arguments

    add_lm_arguments(accuracy)
    accuracy.set_defaults(handler=accuracy_command)

    merge = subparsers.add_parser(
        "merge",
        help="merge the runs of several client processes; verdicts judged again from the merged histograms",
        description="Adds the histograms of runs made side by side (one per client process or host) and judges "
        "each scenario again from the sums, with the settings from each run's results.json (they must agree, "
        "except each process's share: target QPS, seeds, trace file). Shards of one run (tailmark run --shard I/N) "
        "merge as that run, each shard's client evidence judged on its own; a shard that is missing, partial or "
        "began late makes the result INVALID, naming it.",
    )
    merge.add_argument("inputs", type=Path, nargs="+", help="run directories or histograms.json files")
    merge.add_argument(
        "-o", "--output", type=Path, required=True, help="merged run directory (results.json, summary.csv, "
        "report.html, histograms.json); a name ending in .json: the merged histograms file only",
    )  # fmt: skip
    merge.add_argument(
        "--start-tolerance", type=float, default=0.1, help="shards: seconds a shard may begin after the common "
        "start (or its clock be off the target's) before the result is INVALID (default 0.1)",
    )  # fmt: skip
    merge.add_argument("--fail-on-invalid", action="store_true", help=f"exit {EXIT_INVALID} if any result is INVALID")
    merge.set_defaults(handler=merge_command)

    queries = subparsers.add_parser(
        "queries",
        help="how many queries a percentile's confidence interval of a wanted width needs",
        description="The fewest queries whose distribution-free interval on --percentile, at --confidence, lies "
        "between the sample's own percentiles 100 - (100 - p)(1 +- tail error): for p99 and --tail-error 0.1, "
        "between the p98.9 and the p99.1 of the run (client/intervals.py).",
    )
    queries.add_argument("--percentile", type=float, default=99.0, help="percentile (default 99)")
    queries.add_argument("--confidence", type=float, default=0.95, help="confidence of the interval (default 0.95)")
    queries.add_argument(
        "--tail-error", type=float, default=0.1, help="relative error allowed on the tail share 100 - p (default 0.1)"
    )
    queries.add_argument("--rate", type=float, help="queries/s: also say how long a run that needs")
    queries.add_argument(
        "--correlation", type=float, default=1.0, help="the variance inflation a similar run reported for this "
        "percentile (results.json intervals.correlation): queued latencies are worth fewer independent ones, so "
        "that many times the queries (default 1: independent)",
    )  # fmt: skip
    queries.set_defaults(handler=queries_command)

    compare = subparsers.add_parser(
        "compare",
        help="differences between two runs (or two sets of repeats), each with whether it is significant",
        description="Per scenario and class: throughput and each percentile of A and B, the difference, and "
        "whether it is significant: for single runs, when the 95 %% intervals do not overlap; for runs made "
        "with --repeat, by an exact Mann-Whitney rank test over the repeats at 5 %%.",
    )
    compare.add_argument("a", help="run directory (or results.json) A, the baseline; DIR,DIR,...: runs as repeats")
    compare.add_argument("b", help="run directory (or results.json) B; DIR,DIR,...: runs as repeats")
    compare.add_argument("--html", type=Path, help="also write the comparison as an HTML page here")
    compare.set_defaults(handler=compare_command)


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="use TLS")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate file (default: system roots)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="client private key (mutual TLS)")
    parser.add_argument("--header", action="append", default=[], help="request metadata 'key: value' (repeatable)")
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for the target (default 10)"
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="h2",
        help="h2: tailmark's own HTTP/2 gRPC client (default; 3-4x less CPU per request); grpc: grpc.aio; "
        "http: KServe-v2 REST over HTTP/1.1 (--target http://HOST:PORT); openai: OpenAI-compatible completions "
        "or chat, with token timings (--target http://HOST:PORT, --api; README 'Generative endpoints'); "
        "grpc-stream: KServe ModelStreamInfer in Triton's LLM convention (text_input -> text_output), with token "
        "timings (--target HOST:PORT; docs/generative.md)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="connections of the h2 (HTTP/2) and http (HTTP/1.1 keep-alive) transports (default 1)",
    )
    parser.add_argument("--http-json", action="store_true", help="http transport: JSON tensors, not binary ones")


async def _connect(args: argparse.Namespace, target: str, timeout_s: float):
    from tailmark.client.transport import GrpcTransport, TlsSettings

    tls = TlsSettings(args.tls_ca, args.tls_cert, args.tls_key) if (args.tls or args.tls_ca or args.tls_cert) else None
    common = dict(
        tls=tls, metadata=_parse_headers(args.header), timeout_s=timeout_s, connect_timeout_s=args.connect_timeout
    )
    if args.transport == "h2":
        from tailmark.cli import UsageError
        from tailmark.client.h2_transport import H2Transport

        if args.connections < 1:
            raise UsageError(f"--connections {args.connections}: must be >= 1")
        return await H2Transport.connect(target, connections=args.connections, **common)
    if args.transport in GENERATIVE_TRANSPORTS:
        from tailmark.client.generative_cli import connect

        return await connect(args, target, common)
    if args.transport == "http":
        from tailmark.cli import UsageError
        from tailmark.client.http_transport import HttpTransport

        if args.connections < 1:
            raise UsageError(f"--connections {args.connections}: must be >= 1")
        json_tensors = getattr(args, "http_json", False)
        return await HttpTransport.connect(target, connections=args.connections, json_tensors=json_tensors, **common)
    return await GrpcTransport.connect(target, **common)


def run_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.client.errors import ConfigError, TailmarkError

    try:
        plan = build_plan(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be >= 1")
    if args.repeat > 1 and plan.mlperf:
        raise UsageError("--repeat with --mlperf: MLPerf runs use the official seeds; make separate runs instead")
    try:
        if args.workers is not None:
            from tailmark.client.workers import run_workers

            return run_workers(plan, args)
        return _run_with_loop(plan, args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except TailmarkError as exc:
        print(f"tailmark run: {exc}", file=sys.stderr)
        return 1


def build_plan(args: argparse.Namespace):
    from tailmark.client.plan import RunPlan, load_plan_file, resolve_all, scenario_settings

    file: dict[str, Any] = load_plan_file(args.config) if args.config else {}
    target = args.target or file.get("target")
    embedded = target is None
    model = args.model or file.get("model") or (embedded_model(getattr(args, "transport", None)) if embedded else None)
    if model is None:
        from tailmark.client.errors import ConfigError

        raise ConfigError("--model is required with --target")
    common = dict(file.get("defaults") or {})
    flags = {field: getattr(args, _dest(flag)) for flag, (field, _, _) in SETTING_FLAGS.items()}
    common.update({field: value for field, value in flags.items() if value is not None})  # flags win
    token_settings(args, common)  # --llm-preset; token settings need --transport openai
    per_scenario = [{"scenario": e} if isinstance(e, str) else e for e in (file.get("scenarios") or [])]
    names = list(args.scenario or [])
    defaulted = not names and not per_scenario
    if defaulted:
        names = list(EMBEDDED_SCENARIOS if embedded else ENDPOINT_SCENARIOS)
    if embedded:  # the built-in server's model: rates and the sample trace chosen for it
        per_scenario = [*per_scenario, *(_embedded_entry(name, common) for name in names)]
        if defaulted and getattr(args, "transport", "h2") not in GENERATIVE_TRANSPORTS:
            from tailmark.client.scenario_routes import EMBEDDED_GENERATIVE

            per_scenario.append(dict(EMBEDDED_GENERATIVE))  # and a language model's tokens, over the OpenAI routes
        names = []
    settings = scenario_settings(names, common, per_scenario, flags=flags)
    mlperf = bool(args.mlperf or file.get("mlperf"))
    version = args.model_version or str(file.get("model_version") or "")
    from tailmark.client.scenario_routes import fill  # each scenario's transport and model, its own or the run's

    scenarios = fill(resolve_all(settings, mlperf=mlperf), args, model, version)
    return RunPlan(target=target, model=model, model_version=version, scenarios=scenarios, mlperf=mlperf)


def _embedded_entry(name: str, common: dict[str, Any]) -> dict[str, Any]:
    """The built-in run: every scenario about 10-20 s, the trace a 10x replay of the Azure sample."""
    entry: dict[str, Any] = {"scenario": name}
    if name == "trace" and not common.get("trace_path"):
        entry.update(trace_path=str(EMBEDDED_TRACE), trace_speed=10.0)
        if not common.get("max_duration_s"):
            entry["max_duration_s"] = 15.0
    if name == "fixed-interval" and not common.get("target_qps"):
        entry["target_qps"] = 50.0
    if name == "server" and not common.get("target_qps"):
        # ~3,000 queries: early stopping then tolerates up to 17 over the bound (at 100/s for 10 s, 1,000 queries
        # fail with 4 over), so a healthy box passes. The pinned ResNet (one core, ~1.7 ms a request) runs at
        # ~25 % busy at 150/s; at 300/s (~50 %) its own queueing pushed p99 past 10 ms on a quiet 2-core VM.
        entry["target_qps"] = 150.0
        if not common.get("min_duration_s"):
            entry["min_duration_s"] = 20.0
    if name == "offline" and not common.get("target_qps"):
        # LoadGen sizes the Offline query from the expected rate: the built-in ResNet does ~800 samples/s
        # on 2 cores, so 1000/s keeps the query longer than the 10 s minimum
        entry["target_qps"] = 1000.0
    return entry


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _parse_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    from tailmark.client.errors import ConfigError

    shapes = {}
    for spec in specs:
        name, _, dims = spec.partition(":")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise ConfigError(f"--shape {spec!r}: expected NAME:D1,D2,... with integer dimensions") from None
        if not name or any(d < 1 for d in shapes[name]):
            raise ConfigError(f"--shape {spec!r}: expected NAME:D1,D2,... with dimensions >= 1")
    return shapes


def _parse_headers(specs: list[str]) -> list[tuple[str, str]]:
    from tailmark.client.errors import ConfigError

    headers = []
    for spec in specs:
        key, sep, value = spec.partition(":")
        if not sep or not key.strip():
            raise ConfigError(f"--header {spec!r}: expected 'key: value'")
        headers.append((key.strip().lower(), value.strip()))
    return headers


def _run_with_loop(plan, args: argparse.Namespace) -> int:
    from tailmark.client.embedded import HTTP_TRANSPORTS, EmbeddedServer
    from tailmark.client.pinning import split_cpus
    from tailmark.client.scenario_routes import needs_http

    out_dir = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{plan.model}"
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    scrape = _scrape_settings(args, embedded=plan.target is None)
    if plan.target is not None:  # a sweep's step against the built-in server it started says so (built_in_pinning)
        built_in = getattr(args, "built_in_pinning", None)
        embedded, pinned = built_in is not None, built_in or None
        return runner(_measure(plan, args, plan.target, out_dir, embedded=embedded, pinning=pinned, scrape=scrape))
    pinning = None if args.no_pin else split_cpus()
    print("starting the built-in server (tailmark serve) ...", file=sys.stderr, flush=True)
    cpus = pinning.server if pinning else None
    http = args.transport in HTTP_TRANSPORTS or needs_http(plan.scenarios)
    with EmbeddedServer(None, "--metrics-port", "0", cpus=cpus, http=http) as server:
        if pinning is not None:
            pinning.pin_this_process()  # the client, and the host probe it starts, on the other CPUs
        if scrape is not None and not scrape.url:  # the built-in server's own metrics, scraped by default
            scrape = dataclasses.replace(scrape, url=server.metrics_url, unreachable=None if server.metrics_url
                                         else "the built-in server printed no metrics address")  # fmt: skip
        target = server.target_for(args.transport)
        return runner(_measure(plan, args, target, out_dir, embedded=True, pinning=pinning, scrape=scrape,
                               target_for=server.target_for))  # fmt: skip


def _stability_settings(args: argparse.Namespace):
    """--stability-*: perf_analyzer's within-run check (client/stability.py), on when any of them is given."""
    from tailmark.cli import UsageError
    from tailmark.client.stability import StabilitySettings

    given = {k: getattr(args, f"stability_{k}", None) for k in ("percentage", "windows", "window_s")}
    if all(v is None for v in given.values()):
        return None
    try:
        return StabilitySettings(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _scrape_settings(args: argparse.Namespace, embedded: bool):
    """--metrics-*: the scrape's settings (url "" until the built-in server prints its own), or None."""
    from tailmark.cli import UsageError
    from tailmark.client.metrics_scrape import MetricsUnavailable, ScrapeSettings, parser

    url, interval, series = (getattr(args, k, None) for k in ("metrics_url", "metrics_interval", "metrics_series"))
    if not url and not embedded:
        return None
    if url and not url.startswith(("http://", "https://")):
        raise UsageError(f"--metrics-url {url!r}: expected http://HOST:PORT/metrics")
    if interval is not None and not interval > 0:
        raise UsageError(f"--metrics-interval {interval:g}: must be > 0")
    try:
        re.compile(series or "")
    except re.error as exc:
        raise UsageError(f"--metrics-series {series!r}: not a regular expression ({exc})") from None
    try:
        parser()
    except MetricsUnavailable as exc:
        if url:
            raise UsageError(str(exc)) from None
        print(f"tailmark run: warning: {exc}; the run goes on without server metrics", file=sys.stderr, flush=True)
        return None
    return ScrapeSettings(url or "", interval_s=interval or 1.0, extra_series=series)


async def _measure(
    plan,
    args: argparse.Namespace,
    target: str,
    out_dir: Path,
    embedded: bool = False,
    pinning=None,
    scrape=None,
    target_for=None,
) -> int:
    from tailmark.client.calibration import calibrate
    from tailmark.client.control import endpoint_notes
    from tailmark.client.environment import capture
    from tailmark.client.host_probe import HostProbe
    from tailmark.client.progress import Progress
    from tailmark.client.repeat import repeat_plan
    from tailmark.client.report import console_table
    from tailmark.client.results import RunResult
    from tailmark.client.run import Run, TargetLost
    from tailmark.client.scenario_routes import describe, open_lanes
    from tailmark.client.workers import shard_clock, shard_for

    stability = _stability_settings(args)  # a bad value is refused before anything starts
    shard = shard_for(args, plan)  # --shard I/N --start-at T, or None
    # one connection, model and sample pool per distinct endpoint of the scenarios (client/scenario_routes.py)
    lanes = await open_lanes(plan.scenarios, args, target_for=target_for or (lambda _: target), connect=_connect,
                             shapes=_parse_shapes(args.shape))  # fmt: skip
    assert lanes.primary is not None
    transport, info, pool, args = lanes.primary.transport, lanes.primary.info, lanes.primary.pool, lanes.primary.args
    probe = None if args.no_host_probe else HostProbe()
    routes = None
    try:
        routes = await _class_routes(plan, args, target, lanes.primary.raw)
        environment = capture()
        endpoints = await describe(lanes, endpoint_notes)  # the first is the first scenario's
        environment["target"] = {"address": target, "embedded": embedded, "model": info.name, "version": info.version,
                                 "notes": endpoints[0]["notes"]}  # fmt: skip
        environment["client_transport"] = {"kind": args.transport, "connections": args.connections}
        if len(endpoints) > 1:  # target and client_transport are the first scenario's: name every endpoint
            environment["endpoints"] = endpoints
        if args.transport in GENERATIVE_TRANSPORTS:
            environment["workload"] = pool.describe()  # prompts, lengths, corpus (client/prompts.py)
            cancel = getattr(transport, "policy", None)  # --cancel-* (client/cancellation.py)
            environment["workload"]["cancel"] = cancel.to_dict() if cancel is not None else None
        if args.transport == "http":  # how tensors travel: Triton's binary extension unless --http-json
            environment["client_transport"]["tensors"] = "json" if getattr(args, "http_json", False) else "binary"
        environment["pinning"] = pinning.to_dict() if pinning is not None else None
        result = RunResult(environment=environment)
        if args.repeat > 1:
            result.repeat_count, result.scenarios_per_repeat = args.repeat, len(plan.scenarios)
        progress = Progress(enabled=not args.no_progress)
        if scrape is not None and scrape.unreachable is None:
            from tailmark.client.metrics_scrape import check

            if (why := await asyncio.to_thread(check, scrape.url)) is not None:
                print(f"tailmark run: warning: server metrics at {scrape.url}: {why}; the run goes on without them",
                      file=sys.stderr, flush=True)  # fmt: skip
                scrape = dataclasses.replace(scrape, unreachable=f"unreachable: {why}")
        # everything built so far lives for the whole run: keep the cyclic GC from rescanning it mid-run
        gc.freeze()
        # the dispatcher's waker thread must get the GIL within its sub-millisecond budget (default 5 ms)
        sys.setswitchinterval(0.0005)
        if probe is not None:
            probe.start()
        if not args.no_calibration:
            progress.note("calibrating the client on this host (about 2 s) ...")
            calibration = await calibrate(
                transport, pool, lag_bound_ms=plan.scenarios[0].send_lag_bound_ms, probe=probe,
                timeout_s=plan.scenarios[0].request_timeout_s or None,
            )  # fmt: skip
            result.calibration = calibration.to_dict()
            result.calibration["endpoint"] = f"{lanes.primary.kind} {target}"  # the first scenario's, as measured
            own = [shard.advice_share(s) for s in plan.scenarios] if shard else list(plan.scenarios)
            for line in calibration.advice(own):
                print(f"tailmark run: warning: {line}", file=sys.stderr, flush=True)
        if shard is not None:
            shard.record["clock"] = await asyncio.to_thread(shard_clock, args, target)
            environment["shard"] = shard.record  # filled in as each scenario starts
            if shard.start_at_s is None:  # --start-at stdin (--workers): ready now; the parent sends the instant
                await asyncio.to_thread(shard.read_start, sys.stdin, sys.stderr)
        out_dir.mkdir(parents=True, exist_ok=True)  # only now: a run that cannot start leaves no empty folder
        scenarios = repeat_plan(plan.scenarios, args.repeat)
        run = Run(scenarios=scenarios, transport=transport, pool=pool, out_dir=out_dir, result=result,
                  progress=progress, stability=stability, probe=probe, per_request_log=args.per_request_log,
                  metrics=scrape, routes=routes, shard=shard, lanes=lanes,
                  plots=not getattr(args, "without_plots", False))  # fmt: skip
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, run.interrupt, "interrupted by the user (SIGINT)")
        loop.add_signal_handler(signal.SIGTERM, run.interrupt, "terminated (SIGTERM)")
        try:
            await run.execute()
        except TargetLost:
            _print_table(console_table, result)
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
    finally:
        if probe is not None:
            probe.close()
        if routes is not None:
            await routes.aclose()
        await lanes.aclose()
    _print_table(console_table, result)
    check = getattr(transport, "check", None)
    if check is not None and check.note():
        print(f"tailmark run: {check.note()}", file=sys.stderr)
    print(f"results: {out_dir}/results.json  report: {out_dir}/report.html", file=sys.stderr)
    if run.interrupted:
        print(f"tailmark run: {run.interrupted}; partial results kept in {out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if shard is not None:
        print(f"tailmark run: shard {shard.label}: its verdicts cover its share only; judge the whole run with "
              "tailmark merge over every shard's directory", file=sys.stderr)  # fmt: skip
    if args.fail_on_invalid and not result.valid:
        return EXIT_INVALID
    return 0


async def _class_routes(plan, args: argparse.Namespace, target: str, transport):
    """Each traffic class's transport and samples (mixed scenarios: client/traffic_mix.py), or None."""
    from tailmark.client.response_check import checked
    from tailmark.client.settings import Scenario
    from tailmark.client.traffic_mix import PoolOptions, open_routes

    if not any(s.scenario is Scenario.MIXED for s in plan.scenarios):
        return None
    timeout_s = plan.scenarios[0].request_timeout_s
    options = PoolOptions(args.input_data, _parse_shapes(args.shape), args.pool_size, plan.scenarios[0].sample_seed)
    return await open_routes(
        plan.scenarios, target=target, model=plan.model, version=plan.model_version, transport=transport,
        connect=lambda where: _connect(args, where, timeout_s), check=lambda t, i: checked(t, i, args.validate),
        options=options,
    )  # fmt: skip


def _print_table(console_table, result) -> None:
    if result.scenarios:
        print(console_table(result.to_dict()))


def accuracy_command(args: argparse.Namespace) -> int:
    import json

    from tailmark.cli import UsageError
    from tailmark.client.errors import ConfigError
    from tailmark.client.results import write_atomic

    if args.lm:  # a served language model on held-out text (client/accuracy_lm.py)
        from tailmark.client.accuracy_lm import lm_accuracy_command
        from tailmark.client.transport import TlsSettings

        secure = args.tls or args.tls_ca or args.tls_cert
        tls = TlsSettings(args.tls_ca, args.tls_cert, args.tls_key) if secure else None
        common = dict(tls=tls, metadata=_parse_headers(args.header), timeout_s=args.timeout,
                      connect_timeout_s=args.connect_timeout)  # fmt: skip
        return lm_accuracy_command(args, common)
    if args.input_data is None or args.labels is None:
        raise UsageError("accuracy: give --input-data and --labels (or --lm for a served language model)")

    async def measure():
        from tailmark.client.accuracy import load_labels, measure_accuracy
        from tailmark.client.samples import file_pool

        transport = await _connect(args, args.target, args.timeout)
        try:
            info = await transport.model_info(args.model, args.model_version)
            if not args.output and not info.outputs:  # legal: KServe-style endpoints may list none
                raise ConfigError(
                    f"model {args.model!r} lists no outputs in its metadata; pass --output NAME to say which "
                    "output holds the scores"
                )
            pool = file_pool(info, args.input_data, version=args.model_version)
            labels = load_labels(args.labels, pool.count)
            output = args.output or info.outputs[0].name
            return await measure_accuracy(transport, pool, labels, output=output, batch_size=args.batch_size)
        finally:
            await transport.aclose()

    from tailmark.client.accuracy import run_measurement

    result = run_measurement(measure)
    if result is None:
        return 1
    print(f"{args.model}: top-1 {result.top1:.4f} ({result.correct}/{result.samples})"
          + (f", failed requests: {result.errors}" if result.errors else ""))  # fmt: skip
    if args.out:
        write_atomic(args.out, json.dumps({"model": args.model, **result.to_dict()}, indent=2) + "\n")
    if result.errors:
        return 1
    if args.min_top1 is not None and result.top1 < args.min_top1:
        return EXIT_INVALID
    return 0


def report_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.client.report import console_table, write_reports
    from tailmark.client.results import ResultsError, load_results

    if (args.run / "sweep.json").is_file():  # a sweep: its steps' reports and its curve's page
        from tailmark.client.report_sweep import report_sweep_dir

        try:
            text, written = report_sweep_dir(args.run)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(text)
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
        return 0
    path = args.run / "results.json" if args.run.is_dir() else args.run
    try:
        doc = load_results(path)
    except (ResultsError, OSError) as exc:
        raise UsageError(str(exc)) from None
    print(console_table(doc))
    written = write_reports(doc, path.parent)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def merge_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.client.merge import MergeError, summary
    from tailmark.client.shard_merge import merge_inputs, write_run_dir

    if not args.start_tolerance >= 0:
        raise UsageError(f"--start-tolerance {args.start_tolerance:g}: must be >= 0")
    try:
        merged = merge_inputs(args.inputs, start_tolerance_s=args.start_tolerance)
    except MergeError as exc:
        raise UsageError(str(exc)) from None
    if args.output.suffix == ".json":
        merged.write_histograms(args.output)
    elif write_run_dir(merged, args.output) is not None:
        print(f"results: {args.output}/results.json  report: {args.output}/report.html", file=sys.stderr)
    print(summary(merged))
    if args.fail_on_invalid and not all(s.verdict.valid for s in merged.scenarios):
        return EXIT_INVALID
    return 0


def queries_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.client.intervals import queries_needed, tail_shares

    if not args.correlation >= 1.0:
        raise UsageError(f"--correlation {args.correlation:g}: must be at least 1 (1: independent latencies)")
    try:
        n = queries_needed(args.percentile, confidence=args.confidence, tail_error=args.tail_error)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    low, high = tail_shares(n, args.percentile, args.confidence)
    line = f"p{args.percentile:g} at {100 * args.confidence:g} % confidence within p{low:.4g}..p{high:.4g}: "
    if args.correlation > 1.0:  # n independent queries' worth of correlated ones
        line += f"{n:,} independent queries, x{args.correlation:g} for their correlation: "
        n = math.ceil(n * args.correlation)
    line += f"{n:,} queries"
    if args.rate:
        line += f" (at {args.rate:g}/s: {n / args.rate:,.0f} s measured)"
    print(line)
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.client.compare import CompareError, as_repeats, compare_runs, compare_table, write_compare_html
    from tailmark.client.results import ResultsError, load_results

    try:
        sides = []
        for side in (args.a, args.b):
            paths = [Path(p) for p in side.split(",") if p]
            docs = [load_results(p / "results.json" if p.is_dir() else p) for p in paths]
            sides.append(as_repeats(docs, [str(p) for p in paths]))
        comparison = compare_runs(sides[0], sides[1], names=(args.a, args.b))
    except (ResultsError, CompareError) as exc:
        raise UsageError(str(exc)) from None
    print(compare_table(comparison))
    if args.html:
        write_compare_html(comparison, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    return 0
