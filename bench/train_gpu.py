"""Time-to-train of the vision and translation-smoke workloads on a CUDA device, as one prepared script.

For each workload it runs ``tailmark train WORKLOAD --runs N --device cuda`` (fresh process per run, MLPerf's
timing rules, olympic score), then, as the baseline measured in the same session, the same workload on this
machine's CPUs (``--device cpu``, fewer runs), and prints the olympic time-to-train, the epochs of every run and
the GPU/CPU ratio. Results land in ``--output`` (the sets' JSON and logs) plus ``train_gpu.json``, the summary.
Without a CUDA device it says so and exits 0, so it is safe to run anywhere.

    python bench/train_gpu.py --output "$OUT" --runs 5 --cpu-runs 1 --budget-s 480

A missing data set (Fashion-MNIST: ``apt-get install dataset-fashion-mnist``, or ``--fashion-mnist-dir`` pointing
at a copy of its four .gz files) skips that workload with the harness's one-line message. ``--budget-s`` stops
starting new sets once that many seconds have gone, and caps each set, so the script ends inside a device lease.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# translation-smoke: the generated task (no data to install on a bare GPU machine)
WORKLOADS = {"vision": "fashion_cnn", "translation-smoke": "transformer_reverse"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="vision,translation-smoke", help="comma-separated (default both)")
    parser.add_argument("--runs", type=int, default=5, help="runs per GPU set (default 5: an olympic score)")
    parser.add_argument("--cpu-runs", type=int, default=1, help="runs per CPU baseline set (0: no baseline)")
    parser.add_argument("--output", type=Path, default=Path(os.environ.get("OUT", "runs/train_gpu")))
    parser.add_argument("--budget-s", type=float, default=480.0, help="no new set starts after this many seconds")
    parser.add_argument("--fashion-mnist-dir", type=Path, default=None, help="a copy of Fashion-MNIST's .gz files")
    return parser.parse_args(argv)


def run_set(workload: str, device: str, runs: int, output: Path, timeout_s: float) -> dict:
    """One ``tailmark train`` set in its own process; its result JSON (or why there is none)."""
    folder = output / device
    command = [sys.executable, "-m", "tailmark", "train", workload, "--runs", str(runs), "--device", device]
    command += ["--output", str(folder), "--system", f"bench_{device}", "--quiet", "--no-save-model"]
    print(f"$ tailmark {' '.join(command[3:])}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, timeout=timeout_s, check=False, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"device": device, "error": f"stopped after {timeout_s:.0f} s (--budget-s)"}
    print(done.stdout, end="", flush=True)
    if done.returncode == 2:  # a usage error, such as missing data: one line on stderr
        return {"device": device, "error": done.stderr.strip()}
    path = folder / f"{WORKLOADS[workload]}.json"
    if not path.is_file():
        return {"device": device, "error": f"exit {done.returncode}, no result: {done.stderr.strip()[-500:]}"}
    result = json.loads(path.read_text())
    score = result.get("score") or {}
    return {
        "device": device,
        "runs": runs,
        "set_wall_s": round(time.perf_counter() - started, 2),
        "olympic_s": score.get("seconds") if score.get("valid") else None,
        "mean_converged_s": score.get("seconds"),
        "valid": score.get("valid"),
        "epochs": [r["epochs"] for r in result["runs"]],
        "time_to_train_s": [r["time_to_train_s"] for r in result["runs"]],
        "wall_s": [round(r["wall_s"], 2) for r in result["runs"]],
        "rcp": (result.get("rcp") or {}).get("message"),
        "result": str(path),
    }


def describe(entry: dict) -> str:
    if "error" in entry:
        return f"{entry['device']}: no time ({entry['error']})"
    seconds = entry["olympic_s"] if entry["olympic_s"] is not None else entry["mean_converged_s"]
    kind = "olympic" if entry["olympic_s"] is not None else "mean of converged"
    shown = "none converged" if seconds is None else f"{seconds:.2f} s ({kind})"
    return f"{entry['device']}: {shown} over {entry['runs']} runs; epochs {entry['epochs']}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown or args.runs < 1 or args.cpu_runs < 0:
        print(f"train_gpu: --workloads from {', '.join(WORKLOADS)}; --runs >= 1, --cpu-runs >= 0", file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print(f"train_gpu: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); nothing timed")
        return 0
    if args.fashion_mnist_dir is not None:
        os.environ["TAILMARK_FASHION_MNIST_DIR"] = str(args.fashion_mnist_dir)
    device_name = torch.cuda.get_device_name(0)
    print(f"train_gpu: {device_name}, torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict = {"device": device_name, "torch": torch.__version__, "cpus": os.cpu_count(), "workloads": {}}
    plan = [(w, "cuda", args.runs) for w in chosen] + [(w, "cpu", args.cpu_runs) for w in chosen if args.cpu_runs]
    for workload, device, runs in plan:
        left_s = args.budget_s - (time.perf_counter() - started)
        entries = summary["workloads"].setdefault(workload, [])
        if left_s < 10:
            entries.append({"device": device, "error": "not started: --budget-s spent"})
            continue
        if device == "cpu" and any("error" in e for e in entries):
            continue  # no GPU figure to compare against
        entries.append(run_set(workload, device, runs, args.output / workload, left_s))
        (args.output / "train_gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\ntime to train (MLPerf rules, fresh process per run):")
    for workload, entries in summary["workloads"].items():
        for entry in entries:
            print(f"  {workload} {describe(entry)}")
        by_device = {e["device"]: e for e in entries if "error" not in e}
        gpu, cpu = by_device.get("cuda"), by_device.get("cpu")
        gpu_s = gpu and (gpu["olympic_s"] or gpu["mean_converged_s"])
        cpu_s = cpu and cpu["mean_converged_s"]
        if gpu_s and cpu_s:
            summary.setdefault("speedup", {})[workload] = round(cpu_s / gpu_s, 2)
            cpus = os.cpu_count()
            print(f"  {workload}: GPU is {cpu_s / gpu_s:.1f}x the CPU baseline ({cpu_s:.2f} s on {cpus} CPUs)")
    (args.output / "train_gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {args.output / 'train_gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
