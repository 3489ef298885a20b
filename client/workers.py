"""``tailmark run --workers N``: N client processes on this host, one schedule, one merged result.

The parent starts N ordinary ``tailmark run --shard I/N --start-at T`` processes (the same command a Kubernetes
Indexed Job's pods run on other hosts), each with its own connections and, with ``--cpus``, pinned to a CPU of
its own. Each child connects, calibrates and says it is ready; once all are, the parent sends them one common
start two seconds ahead (``--start-at stdin``), so a slow host delays the start rather than one shard. It waits
for them and merges their run directories into one run directory with the verdicts judged again
(client/shard_merge.py). The children write under ``OUT/shards/shard-I/`` with their logs beside them; the merged
results.json, summary.csv and report.html are in ``OUT``.

The parent only waits: it sends no requests, so it does not need a CPU of its own.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tailmark.client.errors import ConfigError

if TYPE_CHECKING:
    from tailmark.client.shards import Shard

READY_TIMEOUT_S = 300.0  # a child not ready by then is left to start late (and be named so)
START_MARGIN_S = 2.0  # from "all ready" to the common start: every child reads it and reaches its wait (a busy
# 2-core VM took most of a second)
SAME_HOST = "none"  # --clock-url none: the children of --workers share this host's clock
# run's flags the parent sets for each child itself (or that only the parent uses)
PARENT_ONLY = {"workers", "cpus", "shard", "start_at", "out", "fail_on_invalid", "no_progress", "clock_url", "help"}


def add_split_flags(run: argparse.ArgumentParser) -> None:
    """run's flags for a load split over processes (--workers) or hosts (--shard, --start-at)."""
    run.add_argument(
        "--workers", type=int, help="split the load over N client processes on this host (one schedule, sharded by "
        "arrival, one common start; merged into one result in --out)",
    )  # fmt: skip
    run.add_argument("--cpus", help="with --workers: pin worker I to the I-th of these CPUs (0,1,... or 0-3)")
    run.add_argument(
        "--shard", metavar="I/N", help="run shard I (0-based) of N: every N-th arrival of the schedule, from I; "
        "merge the shards' run directories with tailmark merge",
    )  # fmt: skip
    run.add_argument(
        "--start-at", metavar="T", help="with --shard: the common start, an absolute UTC instant (ISO 8601, e.g. "
        "2026-12-06T12:00:00Z, or unix seconds); the shard waits for it and records how late it began",
    )  # fmt: skip
    run.add_argument(
        "--clock-url", help="with --shard: an http(s) URL whose Date header the shard's clock is compared with "
        "(default: --metrics-url, or the target with --transport http; 'none': skip)",
    )  # fmt: skip
    run.set_defaults(split_parser=run)


def shard_for(args: argparse.Namespace, plan) -> Shard | None:
    """This process's Shard from --shard/--start-at (None without them); refuses what cannot be sharded."""
    from tailmark.client.shards import Shard, parse_shard, parse_start_at, refuse_unsplittable

    spec, start = getattr(args, "shard", None), getattr(args, "start_at", None)
    if getattr(args, "cpus", None) and not getattr(args, "workers", None):
        raise ConfigError("--cpus pins the processes of --workers; pin a single process with taskset")
    if spec is None and start is None:
        return None
    if spec is None or start is None:
        raise ConfigError("--shard I/N and --start-at T go together: every shard starts at the same instant")
    if plan.target is None:
        raise ConfigError("--shard needs --target: shards share one endpoint, not a built-in server each")
    if args.repeat > 1:
        raise ConfigError("--repeat with --shard: repeat the sharded run instead, with a new --start-at")
    if args.fail_on_invalid:
        raise ConfigError("--fail-on-invalid with --shard: a shard's own verdicts cover only its share; "
                          "use it on tailmark merge")  # fmt: skip
    refuse_unsplittable(plan.scenarios, "--shard")
    index, count = parse_shard(spec)
    shard = Shard(index, count, parse_start_at(start))
    shard.check_start()
    return shard


def shard_clock(args: argparse.Namespace, target: str) -> dict:
    """What this shard can learn of its clock (client/clock_check.py); nothing for --workers' children, which
    share one host's clock."""
    from tailmark.client.clock_check import clock_record

    if getattr(args, "clock_url", None) == SAME_HOST:
        return {"kernel": None, "date_source": None, "date_offset": None, "note": "one host, one clock (--workers)"}
    return clock_record(clock_url_for(args, target))


def clock_url_for(args: argparse.Namespace, target: str) -> str | None:
    url = getattr(args, "clock_url", None)
    if url:
        return url
    if getattr(args, "metrics_url", None):
        return args.metrics_url
    if args.transport == "http" and target.startswith(("http://", "https://")):
        return target.rstrip("/") + "/v2/health/ready"
    return None


def parse_cpus(text: str | None, count: int) -> list[int] | None:
    if text is None:
        return None
    cpus: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(f"--cpus {text!r}: expected CPU numbers like 0,1,2 or 0-3") from None
    if len(cpus) != count:
        raise ConfigError(f"--cpus {text!r}: {len(cpus)} CPUs for {count} workers; give one CPU per worker")
    allowed = os.sched_getaffinity(0)
    if not set(cpus) <= allowed:
        raise ConfigError(f"--cpus {text!r}: CPUs {sorted(set(cpus) - allowed)} are not available to this process "
                          f"(available: {sorted(allowed)})")  # fmt: skip
    return cpus


def child_argv(args: argparse.Namespace) -> list[str]:
    """run's flags as given (everything but PARENT_ONLY), rebuilt from the parsed namespace."""
    argv: list[str] = []
    for action in args.split_parser._actions:
        if not action.option_strings or action.dest in PARENT_ONLY:
            continue
        flag = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        value = getattr(args, action.dest, None)
        if action.nargs == 0:  # store_true
            argv += [flag] if value and value != action.default else []
        elif isinstance(action, argparse._AppendAction):
            for item in value or []:
                argv += [flag, str(item)]
        elif value is not None and value != action.default:
            argv += [flag, str(value)]
    return argv


def run_workers(plan, args: argparse.Namespace) -> int:
    """Start the shards, wait for them, merge them into ``--out``; the exit code of the merged run."""
    from tailmark.client.merge import MergeError, summary
    from tailmark.client.report import console_table
    from tailmark.client.shard_merge import merge_inputs, write_run_dir
    from tailmark.client.shards import STDIN, iso, parse_start_at, refuse_unsplittable

    count = args.workers
    if count < 1:
        raise ConfigError(f"--workers {count}: must be >= 1")
    if getattr(args, "shard", None):
        raise ConfigError("--workers starts its own shards; give --shard to a single process instead")
    if plan.target is None:
        raise ConfigError("--workers needs --target: start the server yourself (e.g. tailmark serve, on other CPUs)")
    if args.repeat > 1:
        raise ConfigError("--repeat with --workers: repeat the whole --workers run instead")
    refuse_unsplittable(plan.scenarios, "--workers")
    cpus = parse_cpus(args.cpus, count)
    start_at = parse_start_at(args.start_at) if args.start_at else None  # None: once every child is ready
    out = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{plan.model}-workers{count}"
    shards_dir = out / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    common = child_argv(args)
    dirs = [shards_dir / f"shard-{i}" for i in range(count)]
    children: list[subprocess.Popen] = []
    pinned = f", pinned to CPUs {','.join(map(str, cpus))}" if cpus else ""
    when = "once all are ready" if start_at is None else f"at {iso(start_at)}"
    print(f"tailmark run: {count} client processes{pinned}, common start {when}; their logs in {shards_dir}",
          file=sys.stderr, flush=True)  # fmt: skip
    forward = _forward_signals(children)
    try:
        for i, shard_dir in enumerate(dirs):
            at = STDIN if start_at is None else repr(start_at)
            argv = [sys.executable, "-m", "tailmark", "run", *common, "--no-progress", "--clock-url", SAME_HOST,
                    "--shard", f"{i}/{count}", "--start-at", at, "--out", str(shard_dir)]  # fmt: skip
            with open(shards_dir / f"shard-{i}.log", "wb") as log:
                children.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT))
            if cpus:  # before the child gets past its imports: every thread it starts inherits the mask
                os.sched_setaffinity(children[-1].pid, {cpus[i]})
        if start_at is None:
            start_at = _start_when_ready(children, [shards_dir / f"shard-{i}.log" for i in range(count)])
            print(f"tailmark run: every process ready; common start at {iso(start_at)}", file=sys.stderr, flush=True)
        codes = [child.wait() for child in children]
    finally:
        for child in children:  # only if the parent itself failed: never leave a shard running
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdin is not None and not child.stdin.closed:
                child.stdin.close()
        forward()
    for i, code in enumerate(codes):
        if code != 0:
            tail = (shards_dir / f"shard-{i}.log").read_text(errors="replace").strip().splitlines()[-3:]
            print(f"tailmark run: shard {i}/{count} exited {code}: " + " | ".join(tail), file=sys.stderr)
    try:
        merged = merge_inputs(dirs, expected_count=count)
    except MergeError:
        if any(code == 130 for code in codes):  # interrupted before any shard had written a result
            print("tailmark run: interrupted; no shard had a result to keep", file=sys.stderr)
            return 130
        raise
    doc = write_run_dir(merged, out)
    if doc is not None:
        print(console_table(doc))
    print(summary(merged))
    print(f"results: {out}/results.json  report: {out}/report.html", file=sys.stderr)
    if any(code == 130 for code in codes):
        return 130
    if any(code != 0 for code in codes):
        return 1
    if args.fail_on_invalid and not all(s.verdict.valid for s in merged.scenarios):
        return 3
    return 0


def _start_when_ready(children: list[subprocess.Popen], logs: list[Path]) -> float:
    """Wait until every living child has said READY (connected, calibrated, clock checked), then send them all
    one instant a moment ahead: a busy host that starts processes slowly delays the start, not one shard."""
    from tailmark.client.shards import READY

    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = set(range(len(children)))
    while waiting and time.monotonic() < deadline:
        for i in list(waiting):
            if children[i].poll() is not None or READY in logs[i].read_text(errors="replace"):
                waiting.discard(i)
        time.sleep(0.05)
    start_at = time.time() + START_MARGIN_S
    for child in children:
        if child.poll() is None and child.stdin is not None:
            try:
                child.stdin.write(f"{start_at!r}\n".encode())
                child.stdin.close()
            except BrokenPipeError:  # it died just now: merge names it
                pass
    return start_at


def _forward_signals(children: list[subprocess.Popen]):
    """SIGINT/SIGTERM to the parent go on to every child (each keeps what it measured); returns the undo."""

    def forward(signum, _frame) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
