"""Time-to-train of the transformer workloads (lm, translation): olympic scores over N runs, median over sets.

For each workload it runs ``tailmark train WORKLOAD --runs N`` ``--sets`` times (each run a fresh process under
MLPerf's timing rules; each set scored as MLPerf does: drop the fastest and the slowest run, mean of the rest) and
prints, per set, the olympic time to train, every run's epochs, time to train and CPU time, the load average, and
the RCP verdict; then, per workload, the median of the sets' olympic scores and the median of all converged runs.
The exact ``tailmark train`` command of every set is printed before it runs, and everything lands in ``--output``
(the sets' result JSON and MLPerf logs) plus ``train_time.json``, the summary.

    python bench/train_time.py --workloads lm,translation --runs 5 --sets 3 --threads 1
    python bench/train_time.py --workloads lm --set lm:size=test --runs 3      # seconds: the test size
    python bench/train_time.py --summarize runs/a/transformer_de_en.json ...   # re-report sets already run

``--summarize`` reads result JSON written by ``tailmark train`` (an RCP set, say) and reports it the same way
without training. On a shared machine the figures say "this box, this load": the CPU time per run beside the wall
time shows how much of a run was the neighbours'. A missing data set stops that workload with the harness's
one-line message; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="lm,translation", help="comma-separated (default lm,translation)")
    parser.add_argument("--runs", type=int, default=5, help="runs per set (default 5: an olympic score)")
    parser.add_argument("--sets", type=int, default=1, help="sets per workload (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="WORKLOAD:KEY=VALUE",
        help="a hyperparameter override for one workload (open division), e.g. lm:size=test",
    )
    parser.add_argument("--output", type=Path, default=Path(os.environ.get("OUT", "runs/train_time")))
    parser.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="JSON", help="report these sets")
    return parser.parse_args(argv)


def overrides_for(workload: str, items: list[str]) -> list[str]:
    """The ``--set`` items addressed to ``workload``, as tailmark train's KEY=VALUE."""
    chosen = []
    for item in items:
        name, sep, override = item.partition(":")
        if not sep or "=" not in override:
            raise ValueError(f"--set {item!r}; expected WORKLOAD:KEY=VALUE")
        if name == workload:
            chosen.append(override)
    return chosen


def train_command(workload: str, args: argparse.Namespace, folder: Path) -> list[str]:
    command = ["tailmark", "train", workload, "--runs", str(args.runs), "--threads", str(args.threads)]
    for override in overrides_for(workload, args.set):
        command += ["--set", override]
    return [*command, "--output", str(folder), "--quiet", "--no-save-model"]


def run_set(workload: str, args: argparse.Namespace, index: int) -> dict:
    """One ``tailmark train`` set in its own process; its summary (or why there is none)."""
    folder = args.output / workload / f"set_{index}"
    command = train_command(workload, args, folder)
    print(f"$ {' '.join(command)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "tailmark", *command[1:]], check=False, capture_output=True, text=True)
    print(done.stdout, end="", flush=True)
    if done.returncode == 2:  # a usage error such as a missing data set: one line on stderr
        return {"command": " ".join(command), "error": done.stderr.strip()}
    found = sorted(folder.glob("*.json"))
    if not found:
        return {"command": " ".join(command), "error": f"exit {done.returncode}, no result: {done.stderr[-500:]}"}
    return {"command": " ".join(command), **summarize(found[0])}


def summarize(path: Path) -> dict:
    """What a ``tailmark train`` result JSON says about time to train."""
    result = json.loads(path.read_text(encoding="utf-8"))
    score = result.get("score") or {}
    runs = result["runs"]
    return {
        "workload": result["workload"],
        "benchmark": result["benchmark"],
        "result": str(path),
        "olympic_s": score.get("seconds") if score.get("valid") else None,
        "score_note": score.get("reason", ""),
        "converged": f"{sum(r['status'] == 'success' for r in runs)}/{len(runs)}",
        "epochs": [r["epochs"] for r in runs],
        "time_to_train_s": [r["time_to_train_s"] for r in runs],
        "cpu_s": [round(r["cpu_s"], 1) for r in runs],
        "load": [r["loadavg_start"][0] for r in runs] + [runs[-1]["loadavg_end"][0]] if runs else [],
        "rcp": (result.get("rcp") or {}).get("message"),
    }


def describe(entry: dict) -> list[str]:
    if "error" in entry:
        return [f"  no time: {entry['error']}"]
    olympic = entry["olympic_s"]
    head = f"{olympic:.2f} s olympic" if olympic is not None else f"no olympic score ({entry['score_note']})"
    times = " ".join("-" if t is None else f"{t:.1f}" for t in entry["time_to_train_s"])
    load = f"{min(entry['load']):.1f}-{max(entry['load']):.1f}" if entry["load"] else "-"
    lines = [
        f"  {head}; {entry['converged']} converged; epochs {' '.join(map(str, entry['epochs']))}",
        f"    times to train (s) {times}; CPU per run (s) {' '.join(map(str, entry['cpu_s']))}; load {load}",
    ]
    if entry["rcp"]:
        lines.append(f"    {entry['rcp']}")
    return lines


def medians(entries: list[dict]) -> dict:
    scores = [e["olympic_s"] for e in entries if e.get("olympic_s") is not None]
    runs = [t for e in entries if "error" not in e for t in e["time_to_train_s"] if t is not None]
    return {
        "sets_scored": len(scores),
        "median_olympic_s": statistics.median(scores) if scores else None,
        "median_run_s": statistics.median(runs) if runs else None,
        "runs_converged": len(runs),
    }


def report(by_workload: dict[str, list[dict]]) -> dict:
    summary: dict = {"workloads": {}}
    print("\ntime to train (MLPerf rules, fresh process per run):")
    for workload, entries in by_workload.items():
        print(f"{workload}:")
        for entry in entries:
            print(f"  $ {entry['command']}" if "command" in entry else f"  recorded set: {entry['result']}")
            for line in describe(entry):
                print(line)
        figures = medians(entries)
        summary["workloads"][workload] = {"sets": entries, **figures}
        if figures["median_olympic_s"] is not None:
            print(
                f"  median of {figures['sets_scored']} olympic score(s): {figures['median_olympic_s']:.2f} s;"
                f" median of {figures['runs_converged']} converged runs: {figures['median_run_s']:.2f} s"
            )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runs < 1 or args.sets < 1 or args.threads < 1:
        print("train_time: --runs, --sets and --threads must be >= 1", file=sys.stderr)
        return 2
    by_workload: dict[str, list[dict]] = {}
    if args.summarize is not None:
        for path in args.summarize:
            if not path.is_file():
                print(f"train_time: {path}: no such result file", file=sys.stderr)
                return 2
            entry = summarize(path)
            by_workload.setdefault(entry["workload"], []).append(entry)
        report(by_workload)
        return 0
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    try:
        for workload in chosen:
            overrides_for(workload, args.set)
    except ValueError as exc:
        print(f"train_time: {exc}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for workload in chosen:
        for index in range(args.sets):
            entry = run_set(workload, args, index)
            by_workload.setdefault(workload, []).append(entry)
            if "error" in entry:
                break  # a missing data set fails every set the same way
    summary = report(by_workload)
    summary.update(runs=args.runs, threads=args.threads, cpus=os.cpu_count(), wall_s=time.perf_counter() - started)
    (args.output / "train_time.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"summary: {args.output / 'train_time.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
