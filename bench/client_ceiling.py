"""How fast one client process can issue requests on schedule, against a baseline measured in the same run.

For each client, Poisson rates are stepped up until a step fails: the send-lag p99 goes over 1 ms, a
request fails, or fewer than 98 % of the scheduled requests complete. Reported per client: the highest
passing rate, and the client's CPU µs per request at that rate.

  tailmark/null    tailmark's dispatcher with the null transport (no network: the client's own ceiling,
                   as LoadGen's null SUT measures it)
  tailmark/grpc    tailmark's dispatcher over grpc.aio to `tailmark serve`'s `null` model on loopback
  tailmark/h2      the same over tailmark's own HTTP/2 transport (`tailmark run --transport h2`)
  tritonclient     a plain tritonclient.grpc.aio open-loop client (one task per request, same schedule,
                   same server): the baseline

On a 2-core machine the server shares the cores with the client, so the networked figures are bounded by
the server as much as by the client (the server runs the lean h2 frontend by default, --server-stack);
the ratios against tritonclient are what compare the clients.

    python bench/client_ceiling.py [--step-seconds 3] [--rates 1000 2000 4000 8000 10000 12000 16000 32000]
                                   [--server-stack h2] [--clients tailmark/h2 ...]
    python bench/client_ceiling.py --soak 600     # RSS at start and end of a 10-minute run at a fixed rate

Measured (2-core VM, quiet, 2026-11-29, ``--step-seconds 3 --rates 2000 4000 8000 10000 12000 16000``):
tailmark/h2 10000/s (send-lag p99 0.34 ms, 86.5 µs CPU per request; 12000/s failed, lag p99 15 ms),
tailmark/grpc 2000/s (301 µs), tritonclient 2000/s (597 µs), tailmark/null 16000/s: h2 over tritonclient
5.00x the ceiling with 6.9x less CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tailmark.client.dispatcher import NS, Dispatcher, Stop
from tailmark.client.h2_transport import H2Transport
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.schedule import poisson
from tailmark.client.transport import GrpcTransport, ModelInfo, NullTransport, TensorInfo

CLIENTS = ("tailmark/null", "tailmark/grpc", "tailmark/h2", "tritonclient")
NULL_INFO = ModelInfo(
    "null", "1", "null", (TensorInfo("INPUT0", "FP32", (-1,)),), (TensorInfo("OUTPUT0", "FP32", (1,)),), 0
)


async def tailmark_step(transport, info: ModelInfo, rate: float, seconds: float) -> dict:
    recorder = Recorder()
    pool = random_pool(info, count=16, seed=1)
    dispatcher = Dispatcher(transport=transport, pool=pool, recorder=recorder, scenario="s", sample_seed=1)
    cpu0 = time.process_time()
    stop = Stop(min_duration_ns=int(seconds * NS), min_queries=0)
    await dispatcher.open_loop(poisson(rate, seed=int(rate)), warmup_ns=0, stop=stop, max_outstanding=0)
    await dispatcher.drain(10)
    cpu = time.process_time() - cpu0
    recorder.flush()
    lag = recorder.histogram(("s", "all"), "send_lag")
    return {
        "issued": dispatcher.issued,
        "done": dispatcher.completed,
        "errors": dispatcher.failed,
        "lag_p99_ms": lag.get_value_at_percentile(99) / 1e6,
        "cpu_us": 1e6 * cpu / max(dispatcher.issued, 1),
    }


async def tritonclient_step(target: str, rate: float, seconds: float) -> dict:
    import tritonclient.grpc.aio as aio

    client = aio.InferenceServerClient(target)
    data = np.zeros(16, np.float32)
    tensor = aio.InferInput("INPUT0", [16], "FP32")
    tensor.set_data_from_numpy(data)
    return await tritonclient_open_loop(client, tensor, rate, seconds)


async def tritonclient_open_loop(client, tensor, rate: float, seconds: float) -> dict:
    """Poisson arrivals at ``rate`` for ``seconds``, one task per request (tritonclient's aio way), sending
    ``tensor`` to the model "null"; closes ``client``. Either tritonclient aio client (grpc or http)."""
    lags, done, errors = [], 0, 0

    async def one(intended: int):
        nonlocal done, errors
        lags.append(time.perf_counter_ns() - intended)
        try:
            await client.infer("null", [tensor])
            done += 1
        except Exception:
            errors += 1

    tasks = set()
    cpu0 = time.process_time()
    start = time.perf_counter_ns()
    end = start + int(seconds * NS)
    for arrival in poisson(rate, seed=int(rate)):
        intended = start + arrival.offset_ns
        if intended >= end:
            break
        gap = intended - time.perf_counter_ns()
        if gap > 2_000_000:
            await asyncio.sleep((gap - 2_000_000) / NS)
        while time.perf_counter_ns() < intended:
            await asyncio.sleep(0)
        task = asyncio.ensure_future(one(intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    cpu = time.process_time() - cpu0
    await client.close()
    issued = len(lags)
    return {
        "issued": issued,
        "done": done,
        "errors": errors,
        "lag_p99_ms": float(np.percentile(np.array(lags) / 1e6, 99)) if lags else 0.0,
        "cpu_us": 1e6 * cpu / max(issued, 1),
    }


def passed(step: dict) -> bool:
    return step["errors"] == 0 and step["lag_p99_ms"] <= 1.0 and step["done"] >= 0.98 * step["issued"]


async def ceiling(name: str, make_step, rates: list[float]) -> tuple[float, dict | None]:
    best, best_step = 0.0, None
    for rate in rates:
        step = await make_step(rate)
        ok = passed(step)
        print(
            f"  {name:<13} {rate:>8.0f}/s  lag p99 {step['lag_p99_ms']:7.3f} ms  done {step['done']}/{step['issued']}"
            f"  errors {step['errors']}  {step['cpu_us']:6.1f} µs CPU/req  {'ok' if ok else 'FAIL'}",
            flush=True,
        )
        if not ok:
            break
        best, best_step = rate, step
    return best, best_step


async def main(args) -> int:
    from support.serve import ServerProcess
    from tailmark.server.default_repository import ensure_default_repository

    results = {}
    null = NullTransport(NULL_INFO)
    if "tailmark/null" in args.clients:
        results["tailmark/null"] = await ceiling(
            "tailmark/null", lambda r: tailmark_step(null, NULL_INFO, r, args.step_seconds), args.rates
        )
    with ServerProcess(ensure_default_repository(), "--grpc-stack", args.server_stack) as server:
        for name, connect in (("tailmark/grpc", GrpcTransport.connect), ("tailmark/h2", H2Transport.connect)):
            if name not in args.clients:
                continue
            transport = await connect(server.target)
            info = await transport.model_info("null")
            results[name] = await ceiling(
                name, lambda r, t=transport, i=info: tailmark_step(t, i, r, args.step_seconds), args.rates
            )
            await transport.aclose()
        if "tritonclient" in args.clients:
            results["tritonclient"] = await ceiling(
                "tritonclient", lambda r: tritonclient_step(server.target, r, args.step_seconds), args.rates
            )
    print("\nclient          ceiling (req/s, send-lag p99 <= 1 ms)   CPU µs/req at ceiling")
    for name, (rate, step) in results.items():
        print(f"{name:<15} {rate:>10.0f}                            {step['cpu_us'] if step else float('nan'):8.1f}")
    theirs = results.get("tritonclient")
    for name in ("tailmark/grpc", "tailmark/h2"):
        ours = results.get(name)
        if theirs is None or ours is None:
            continue
        if not theirs[0] or not ours[0]:
            print(f"{name} over tritonclient: no passing step on one side")
            continue
        print(
            f"{name} over tritonclient: ceiling {ours[0] / theirs[0]:.2f}x,"
            f" CPU per request {theirs[1]['cpu_us'] / ours[1]['cpu_us']:.2f}x less"
        )
    return 0


async def soak(args) -> int:
    """RSS at the start and end of a long run at a fixed rate through the null transport."""
    null = NullTransport(NULL_INFO)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = await tailmark_step(null, NULL_INFO, args.soak_rate, 5)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = await tailmark_step(null, NULL_INFO, args.soak_rate, args.soak)
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"soak {args.soak:.0f} s at {args.soak_rate:.0f}/s: {step['issued']} requests,"
        f" lag p99 {step['lag_p99_ms']:.3f} ms"
    )
    print(
        f"max RSS: before {rss0 / 1024:.1f} MiB, after 5 s {rss_start / 1024:.1f} MiB, at end {rss_end / 1024:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 4000, 8000, 10000, 12000, 16000, 32000])
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of a fixed-rate soak instead of the search")
    parser.add_argument("--soak-rate", type=float, default=5000.0)
    parser.add_argument(
        "--clients", nargs="+", default=list(CLIENTS), choices=CLIENTS, help="which clients to measure (default: all)"
    )
    parser.add_argument("--server-stack", default="h2", choices=("aio", "sync", "h2"), help="the server's gRPC stack")
    args = parser.parse_args()
    sys.exit(uvloop.run(soak(args) if args.soak else main(args)))
