"""Sync vs asyncio gRPC server stack on this machine, in one run.

For each stack a ``tailmark serve`` process serves the ``identity`` model (the default repository),
and a separate load process drives it closed-loop at several concurrencies with pre-serialised
requests over grpc.aio on uvloop (the client tailmark itself uses). Prints throughput and latency per
stack and the sync/aio throughput ratio (median of --repeats runs).

    python bench/server_stack.py [--seconds 5] [--repeats 3] [--concurrency 1 8 32]
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
    from support.serve import ServerProcess

    with ServerProcess(repository, "--grpc-stack", stack) as server:
        out = subprocess.run(
            [sys.executable, "-c", LOAD, server.target, "identity", str(seconds), str(concurrency)],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds * 10 + 60,
        )
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    from tailmark.server.default_repository import ensure_default_repository

    repository = ensure_default_repository()
    print(f"identity model, FP32[16], closed loop, {args.seconds:.0f} s per run, median of {args.repeats}")
    print(f"{'concurrency':>11} {'stack':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for concurrency in args.concurrency:
        medians = {}
        for stack in ("aio", "sync"):
            runs = [measure(stack, concurrency, args.seconds, repository) for _ in range(args.repeats)]
            medians[stack] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            m = medians[stack]
            print(f"{concurrency:>11} {stack:>5} {m['rps']:>9.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}", flush=True)
        ratio = medians["sync"]["rps"] / medians["aio"]["rps"]
        print(f"{concurrency:>11} sync/aio throughput ratio: {ratio:.2f}")
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
