"""The server's gRPC stacks against each other on this machine, in one run.

For each stack a ``tailmark serve`` process serves the ``identity`` model (the default repository),
and a separate load process drives it closed-loop at several concurrencies with pre-serialised
requests over grpc.aio on uvloop (the client tailmark itself uses). Prints throughput, latency and the
server's CPU time per request for each stack, and each stack's throughput and CPU ratios against
grpc.aio (medians of --repeats runs). On a 2-core box the client competes with the server for CPU, so
server µs of CPU per request is the steadier figure.

    python bench/server_stack.py [--seconds 5] [--repeats 3] [--concurrency 1 8 32] [--stacks aio sync h2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

LOAD = r"""
import asyncio, json, sys, time
import grpc, numpy as np, uvloop
from tailmark.protos import inference_pb2 as pb

target, model, seconds, concurrency = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
request = pb.ModelInferRequest(model_name=model)
request.inputs.add(name="INPUT0", datatype="FP32", shape=[16])
request.raw_input_contents.append(np.zeros(16, np.float32).tobytes())
payload = request.SerializeToString()

async def main():
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(200):
            await call(payload)
        latencies, stop = [], time.perf_counter() + seconds
        async def worker():
            while time.perf_counter() < stop:
                t = time.perf_counter_ns(); await call(payload); latencies.append(time.perf_counter_ns() - t)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) / 1e6
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99))
    print(json.dumps({"rps": len(lat) / elapsed, "p50_ms": p50, "p99_ms": p99}))

uvloop.run(main())
"""


def measure(stack: str, concurrency: int, seconds: float, repository: Path) -> dict:
    import psutil

    from support.serve import ServerProcess

    with ServerProcess(repository, "--grpc-stack", stack) as server:
        process = psutil.Process(server.process.pid)
        load = subprocess.Popen(
            [sys.executable, "-c", LOAD, server.target, "identity", str(seconds), str(concurrency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # the load process starts and warms up (200 calls) before its timed window
        before = process.cpu_times()
        stdout, _ = load.communicate(timeout=seconds * 10 + 60)
        after = process.cpu_times()
    if load.returncode:
        raise RuntimeError(f"load process failed ({load.returncode})")
    result = json.loads(stdout)
    # CPU over roughly the timed window (it started ~1 s in): per request at the measured rate
    cpu_s = (after.user + after.system) - (before.user + before.system)
    requests = result["rps"] * max(seconds - 0.2, 0.1)
    result["server_cpu_us"] = cpu_s / requests * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--stacks", nargs="+", default=["aio", "sync", "h2"], help="first one is the baseline")
    args = parser.parse_args()

    from tailmark.server.default_repository import ensure_default_repository

    repository = ensure_default_repository()
    print(f"identity model, FP32[16], closed loop, {args.seconds:.0f} s per run, median of {args.repeats}")
    print(f"{'concurrency':>11} {'stack':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU us/req':>18}")
    base = args.stacks[0]
    for concurrency in args.concurrency:
        medians = {}
        for stack in args.stacks:
            runs = [measure(stack, concurrency, args.seconds, repository) for _ in range(args.repeats)]
            medians[stack] = m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(
                f"{concurrency:>11} {stack:>5} {m['rps']:>9.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}"
                f" {m['server_cpu_us']:>18.0f}",
                flush=True,
            )
        for stack in args.stacks[1:]:
            rps = medians[stack]["rps"] / medians[base]["rps"]
            cpu = medians[base]["server_cpu_us"] / medians[stack]["server_cpu_us"]
            print(f"{concurrency:>11} {stack}/{base}: throughput {rps:.2f}x, server CPU per request {1 / cpu:.2f}x")
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
