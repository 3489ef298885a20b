"""``tailmark sweep``: a latency-throughput curve, one real run per load level, and its knee.

A sweep walks request rates (an open-loop scenario, Poisson by default: ``--rates 100,200,400`` or
``--rates 100:1000:100``) or concurrency levels (the concurrency scenario: ``--concurrency 1,2,4,8``). Each
value is one step, and each step is an ordinary ``tailmark run`` of one scenario (the same flags, the same
Run machinery, so verdicts, evidence and the host probe all apply) in its own run directory under the
sweep's. The client is calibrated once, before the first step.

From each step's results.json the sweep takes the achieved rate, the p50/p90/p99/p99.9 of the scenario's
latency (intended -> done; in a concurrency step intended = sent, so sent -> done) and the verdict, and
writes ``sweep.json``, ``curve.csv`` and, with matplotlib (the ``plot`` extra), ``curve.png``, rewritten
after every step; at the end, ``report.html``: the curve and the per-step table on one self-contained page.

**The knee** is the first step, in increasing load, whose p99 exceeds ``knee_factor`` (default 2) times the
p99 of the lowest-load step: where queueing starts to dominate the latency. The sweep also names the highest
achieved rate of the steps before it (the usable throughput at a p99 within that factor). The factor is a
choice, not a law: a tight SLO wants a lower one (``--knee-factor 1.5``).

A step whose verdict blames the client (cause "client") ends the sweep: higher loads would measure the
client. Other INVALID steps stay in the curve with their verdict and cause.

Example::

    tailmark sweep --target 127.0.0.1:8001 --model resnet --concurrency 1,2,4,8 --duration 10
    tailmark sweep --target 127.0.0.1:8001 --model resnet --rates 100:500:100 --out runs/sweep
    tailmark sweep --concurrency 1,2,4   # no target: the built-in server, started once, and its default model
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KNEE_FACTOR = 2.0
RATE_SCENARIOS = ("poisson", "server", "fixed-interval")
CSV_COLUMNS = (
    "step", "scenario", "target_qps", "concurrency", "achieved_qps", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms",
    "queries", "errors", "result", "cause", "run_dir", "repeats", "server",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Step:
    """One point of the curve: the load asked for, the throughput achieved, the latency percentiles (ms)."""

    step: int
    scenario: str
    target_qps: float | None  # a rate sweep's offered rate
    concurrency: int | None  # a concurrency sweep's requests in flight
    achieved_qps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p99_9_ms: float | None
    queries: int
    errors: int
    result: str  # VALID | INVALID
    cause: str | None  # whom an INVALID result blames (docs/verdicts.md)
    run_dir: str  # the step's run directory, relative to the sweep's
    repeats: int = 1  # runs of the step (--repeat K): its figures are their medians
    server: str = ""  # what served the step: "built-in, pinned: server CPUs [0], client CPUs [1]" or "external"


@dataclass(frozen=True, slots=True)
class Knee:
    step: int | None  # the first step past the factor; None: no knee in the swept range
    factor: float
    baseline_p99_ms: float | None  # the lowest-load step's p99
    usable_qps: float | None  # the highest achieved rate of the steps before the knee


def parse_values(text: str, kind: type) -> list:
    """``a,b,c`` or ``start:stop:step`` (stop included), as ``kind``; sorted, without repeats."""
    try:
        if ":" in text:
            start, stop, step = (kind(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            values, value = [], start
            while value <= stop + (1e-9 if kind is float else 0):
                values.append(value)
                value = start + step * len(values)  # no running sum: no drift
        else:
            values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a,b,c or start:stop:step of {kind.__name__}s") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected values > 0")
    return sorted(set(values))


def knee(steps: list[Step], factor: float = KNEE_FACTOR) -> Knee:
    """The first step whose p99 exceeds ``factor`` x the lowest-load step's p99 (steps in increasing load)."""
    measured = [s for s in steps if s.p99_ms is not None]
    if not measured:
        return Knee(None, factor, None, None)
    base = measured[0].p99_ms
    for i, s in enumerate(measured):
        if s.p99_ms > factor * base:
            before = measured[:i]
            return Knee(s.step, factor, base, max((b.achieved_qps for b in before), default=None))
    return Knee(None, factor, base, max(s.achieved_qps for s in measured))


def step_of(doc: dict[str, Any], number: int, run_dir: Path) -> Step:
    """A curve point from one step's results.json (class "all"). With ``--repeat K`` the step holds K runs
    of its scenario: the point is the median of each figure over them, counts are summed, and the result is
    VALID only when every repeat was (the cause: the most common among the INVALID ones)."""
    entries = doc["scenarios"]
    classes = [e["classes"]["all"] for e in entries]
    lats = [c["latency_ms"]["intended_to_done"] for c in classes]  # closed loop: intended = sent, so sent -> done
    eff = entries[0]["settings"]["effective"]
    closed = entries[0]["scenario"] == "concurrency"
    causes = [c["verdict"].get("cause") for c in classes if c["verdict"]["result"] != "VALID"]
    return Step(
        step=number, scenario=entries[0]["scenario"], target_qps=None if closed else eff["target_qps"],
        concurrency=eff["concurrency"] if closed else None,
        achieved_qps=_median([c["achieved_rate_qps"] for c in classes]),
        p50_ms=_median([x["p50"] for x in lats]), p90_ms=_median([x["p90"] for x in lats]),
        p99_ms=_median([x["p99"] for x in lats]), p99_9_ms=_median([x["p99_9"] for x in lats]),
        queries=sum(c["query_count"] for c in classes), errors=sum(c["error_count"] for c in classes),
        result="INVALID" if causes else "VALID", cause=max(set(causes), key=causes.count) if causes else None,
        run_dir=str(run_dir), repeats=len(entries), server=server_text(doc.get("environment") or {}),
    )  # fmt: skip


def server_text(environment: dict[str, Any]) -> str:
    """What served a run, from its results' environment: built in (and how it was pinned) or external."""
    if not (environment.get("target") or {}).get("embedded"):
        return "external"
    pinning = environment.get("pinning")
    if not pinning:
        return "built-in, not pinned"
    return f"built-in, pinned: server CPUs {pinning['server_cpus']}, client CPUs {pinning['client_cpus']}"


def _median(values: list) -> Any:
    known = sorted(v for v in values if v is not None)
    return statistics.median(known) if known else None


# --- outputs ---


def table(steps: list[Step], found: Knee) -> str:
    """The curve as a console table, then the knee."""
    load = "concurrency" if steps and steps[0].concurrency is not None else "target/s"
    head = ("step", load, "achieved/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors", "result")
    rows = [head]
    for s in steps:
        value = s.concurrency if s.concurrency is not None else s.target_qps
        result = s.result + (f" ({s.cause})" if s.cause else "")
        mark = " <- knee" if s.step == found.step else ""
        rows.append((str(s.step), f"{value:g}", f"{s.achieved_qps:.1f}", *(_ms(v) for v in
                     (s.p50_ms, s.p90_ms, s.p99_ms, s.p99_9_ms)), str(s.errors), result + mark))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n\n" + knee_text(found)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def knee_text(found: Knee) -> str:
    if found.baseline_p99_ms is None:
        return "knee: no step measured a latency"
    rule = f"the first step whose p99 exceeds {found.factor:g} x the lowest-load p99 ({found.baseline_p99_ms:.3f} ms)"
    usable = f"{found.usable_qps:.1f}/s" if found.usable_qps is not None else "none"
    if found.step is None:
        return f"knee: none in the swept range ({rule}); highest achieved rate {usable}"
    return f"knee: step {found.step}, {rule}; highest achieved rate before it {usable}"


def csv_text(steps: list[Step]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for s in steps:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(s).items()})
    return out.getvalue()


def stop_reason(step: Step) -> str:
    """Why the sweep should stop after ``step`` ("" to go on): a step the client limited says that every
    higher load would measure the client, not the endpoint (docs/verdicts.md, cause "client")."""
    if step.cause == "client":
        return (
            f"step {step.step}: the client limited the result (cause: client); higher loads would measure the "
            "client, not the endpoint: pin it to its own core or split the load over client processes"
        )
    return ""


def write_outputs(
    out_dir: Path, steps: list[Step], found: Knee, kind: str, complete: bool, stopped: str = ""
) -> list[Path]:
    from tailmark.client.results import write_atomic

    doc = {
        "format": "tailmark.sweep/1",
        "kind": kind,  # "rate" or "concurrency"
        "complete": complete,
        "stopped": stopped or None,  # why the sweep ended before its last value
        "latency": "intended_to_done (concurrency steps: intended = sent, so sent_to_done)",
        "knee_rule": f"first step whose p99 exceeds {found.factor:g} x the lowest-load step's p99",
        "knee": asdict(found),
        "steps": [asdict(s) for s in steps],
    }
    written = [out_dir / "sweep.json", out_dir / "curve.csv"]
    write_atomic(written[0], json.dumps(doc, indent=2) + "\n")
    write_atomic(written[1], csv_text(steps))
    plot = plot_curve(out_dir / "curve.png", steps, found)
    return written + ([plot] if plot else [])


def plot_curve(path: Path, steps: list[Step], found: Knee) -> Path | None:
    """Latency percentiles against achieved throughput, log latency axis; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    measured = [s for s in steps if s.p99_ms is not None]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [s.achieved_qps for s in measured]
    for name, label in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9")):
        ax.plot(x, [getattr(s, name) for s in measured], marker="o", label=label)
    for s in measured:
        if s.step == found.step:
            ax.axvline(s.achieved_qps, color="grey", linestyle="--", label=f"knee (step {s.step})")
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput (queries/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"latency vs throughput ({measured[0].scenario} sweep)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the command ---


def copy_run_flags(parser: argparse.ArgumentParser, run_parser: argparse.ArgumentParser, own: set[str]) -> None:
    """Give ``parser`` every flag of ``tailmark run`` except ``own`` (and help), as copies: run's own actions
    must stay as they are."""
    own = own | {"-h", "--help"}
    for action in run_parser._actions:
        if action.option_strings and not own & set(action.option_strings):
            copied = copy.copy(action)
            copied.option_strings = list(action.option_strings)
            parser._add_action(copied)


def register(subparsers, run_parser: argparse.ArgumentParser) -> None:
    """``tailmark sweep``: every flag of ``tailmark run`` (copied from its parser), plus the sweep's own."""
    sweep = subparsers.add_parser(
        "sweep",
        help="latency-throughput curve over request rates or concurrency levels, and its knee",
        description="One tailmark run per value of --rates (an open-loop scenario, Poisson by default) or "
        "--concurrency (the concurrency scenario), each in its own run directory with its verdict; then the "
        "curve (p50/p90/p99/p99.9 against achieved throughput) as a table, curve.csv, sweep.json and curve.png "
        "(with matplotlib), and the knee: the first step whose p99 exceeds --knee-factor x the lowest-load p99. "
        "Takes every flag of tailmark run.",
    )
    copy_run_flags(sweep, run_parser, {"--scenario", "--concurrency", "--out"})
    values = sweep.add_mutually_exclusive_group(required=True)
    values.add_argument("--rates", type=lambda t: parse_values(t, float), help="R1,R2,... or START:STOP:STEP (/s)")
    values.add_argument(
        "--concurrency", dest="concurrency_levels", type=lambda t: parse_values(t, int), help="N1,N2,... or A:B:STEP"
    )
    sweep.add_argument(
        "--scenario", choices=RATE_SCENARIOS, default=None, help="open-loop scenario of a rate sweep (default poisson)"
    )
    sweep.add_argument(
        "--knee-factor", type=float, default=KNEE_FACTOR, help="knee: first p99 above this x the lowest-load p99"
    )
    sweep.add_argument("--out", type=Path, help="sweep directory (default runs/<time>-<model>-sweep)")
    sweep.set_defaults(handler=sweep_command, concurrency=None)


def run_step(step_args: argparse.Namespace, step_dir: Path, label: str) -> tuple[int, dict[str, Any] | None]:
    """One step of a sweep or a search: an ordinary ``tailmark run`` of one scenario into ``step_dir``.

    ``step_args`` are run's arguments with the step's load filled in. Returns the run's exit code (a
    ``TailmarkError`` during the run is printed after ``label`` and gives 1) and its results.json, or None
    when the run wrote none. A bad setting raises ``UsageError``: every step would refuse it.
    """
    from tailmark.cli import UsageError
    from tailmark.client import cli as run_cli
    from tailmark.client.errors import ConfigError, TailmarkError

    step_args.out, step_args.fail_on_invalid = step_dir, False
    try:
        plan = run_cli.build_plan(step_args)
        if len(plan.scenarios) != 1:
            raise ConfigError("a step runs one scenario; leave 'scenarios' out of --config")
        code = run_cli._run_with_loop(plan, step_args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except TailmarkError as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        code = 1
    results = step_dir / "results.json"
    if not results.exists():
        return code, None
    return code, json.loads(results.read_text(encoding="utf-8"))


def sweep_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.client import cli as run_cli

    if not _has_target(args):
        return _sweep_embedded(args)
    if getattr(args, "repeat", 1) < 1:
        raise UsageError(f"--repeat {args.repeat}: must be >= 1")
    if args.knee_factor <= 1:
        raise UsageError(f"--knee-factor {args.knee_factor:g}: must be > 1")
    if args.concurrency_levels:
        kind, values, scenario = "concurrency", args.concurrency_levels, "concurrency"
        if args.scenario:
            raise UsageError("--scenario: a concurrency sweep runs the concurrency scenario")
    else:
        kind, values, scenario = "rate", args.rates, args.scenario or "poisson"
        if args.target_qps is not None:
            raise UsageError("--target-qps: a rate sweep takes its rates from --rates")
    out_dir = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model}-sweep"
    steps: list[Step] = []
    code = 0
    for number, value in enumerate(values, start=1):
        step_args = argparse.Namespace(**vars(args))
        step_args.scenario = [scenario]
        if kind == "concurrency":
            step_args.concurrency = value
        else:
            step_args.target_qps = value
        step_dir = out_dir / f"step-{number:02d}-{kind}-{value:g}"
        step_args.no_calibration = args.no_calibration or number > 1  # the client is calibrated once
        print(f"tailmark sweep: step {number}/{len(values)}: {scenario} at {kind} {value:g}", file=sys.stderr)
        code, doc = run_step(step_args, step_dir, f"tailmark sweep: step {number}")
        if doc is not None and doc["scenarios"]:
            steps.append(step_of(doc, number, Path(step_dir.name)))  # relative: the sweep folder can move
        found = knee(steps, args.knee_factor)
        complete = number == len(values) and code in (0, run_cli.EXIT_INVALID)
        stopped = stop_reason(steps[-1]) if steps and number < len(values) else ""
        if steps:
            write_outputs(out_dir, steps, found, kind, complete, stopped)
        if code not in (0, run_cli.EXIT_INVALID):
            break
        if stopped:
            print(f"tailmark sweep: stopped after {stopped}", file=sys.stderr)
            break
    found = knee(steps, args.knee_factor)
    if steps:
        print()
        print(table(steps, found))
        from tailmark.client.report_sweep import write_sweep_html  # the curve and the steps in one page

        print(f"sweep report: {write_sweep_html(out_dir)}", file=sys.stderr)
    print(f"sweep: {out_dir}/sweep.json  curve: {out_dir}/curve.csv", file=sys.stderr)
    if code and code != run_cli.EXIT_INVALID:
        return code
    if args.fail_on_invalid and any(s.result != "VALID" for s in steps):
        return run_cli.EXIT_INVALID
    return 0


def _has_target(args: argparse.Namespace) -> bool:
    """--target, or a target in the --config file (as tailmark run reads it)."""
    from tailmark.client.plan import load_plan_file

    return args.target is not None or bool(args.config and load_plan_file(args.config).get("target"))


def _sweep_embedded(args: argparse.Namespace) -> int:
    """No target: one built-in server (``tailmark serve``, as ``tailmark run`` starts it, pinned the same way)
    for every step, so the steps measure one server process and the pinning is split once, not re-split from
    the client's own CPUs at each step; its default model unless ``--model`` names another."""
    from tailmark.client.cli import embedded_model
    from tailmark.client.embedded import HTTP_TRANSPORTS, EmbeddedServer
    from tailmark.client.pinning import split_cpus

    pinning = None if args.no_pin else split_cpus()
    print("starting the built-in server (tailmark serve) ...", file=sys.stderr, flush=True)
    http = getattr(args, "transport", "h2") in HTTP_TRANSPORTS
    with EmbeddedServer(None, "--metrics-port", "0", cpus=pinning.server if pinning else None, http=http) as server:
        if pinning is not None:
            pinning.pin_this_process()  # the client, and the host probe it starts, on the other CPUs
        endpoint = argparse.Namespace(**vars(args))
        endpoint.target = server.target_for(getattr(args, "transport", "h2"))
        endpoint.built_in_pinning = pinning or False  # each step's results say the server was built in, and its CPUs
        endpoint.model = args.model or embedded_model(getattr(args, "transport", None))
        if hasattr(args, "metrics_url") and not args.metrics_url:
            endpoint.metrics_url = server.metrics_url or None  # its own metrics, scraped as tailmark run does
        return sweep_command(endpoint)
