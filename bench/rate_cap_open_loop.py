"""Whether the concurrency scenario's rate limiter (aiolimiter) touches the open loop: it must not.

A null-transport open loop (the client's issue path without a server) at ``--rate`` Poisson for ``--seconds``,
alternately with no limiter ever imported in the process (A, first run only) and right after a rate-capped
concurrency loop in the same process (B). Prints the send-lag p50/p99 of each run and the medians of B over A,
measured in the same invocation.

    python bench/rate_cap_open_loop.py [--rate 1000] [--seconds 3] [--repeats 3]

Measured on the shared 2-core dev VM (load average 1.2-1.8 from other work), 1000/s for 3 s, 3 repeats a
side: send-lag medians A 18.9 / B 18.2 µs at p50 (B/A 0.96), A 134.9 / B 134.1 µs at p99 (B/A 0.99).
The open loop's code never calls the limiter (tests/client/test_concurrency.py
checks that an open-loop run leaves aiolimiter unimported).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import uvloop

from tailmark.client.dispatcher import Dispatcher, Stop
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.schedule import poisson
from tailmark.client.transport import ModelInfo, NullTransport, TensorInfo
from tailmark.client.verdict import percentile_ns

MODEL = ModelInfo("null", "1", "bench", (TensorInfo("INPUT0", "FP32", (16,)),), (), 0)
NS = 1_000_000_000


def _dispatcher(pool, name: str) -> Dispatcher:
    return Dispatcher(transport=NullTransport(MODEL), pool=pool, recorder=Recorder(), scenario=name, sample_seed=0)


async def _open_loop(pool, rate: float, seconds: float, seed: int) -> tuple[float, float]:
    d = _dispatcher(pool, "open")
    stop = Stop(min_duration_ns=int(seconds * NS), min_queries=10)
    await d.open_loop(poisson(rate, seed=seed), warmup_ns=0, stop=stop, max_outstanding=0)
    await d.drain(5.0)
    d.recorder.flush()
    lag = d.recorder.histogram(next(iter(d.recorder.keys())), "send_lag")
    return percentile_ns(lag, 50) / 1e3, percentile_ns(lag, 99) / 1e3


async def _capped_loop(pool, rate: float) -> None:
    stop = Stop(min_duration_ns=NS // 2, min_queries=10)
    await _dispatcher(pool, "capped").concurrent_loop(
        concurrency=4, think_time_ns=0, rate_cap_qps=rate, batch_size=1, warmup_ns=0, stop=stop, traffic_class="c"
    )


async def main(args: argparse.Namespace) -> None:
    pool = random_pool(MODEL, count=16, seed=0)
    figures: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for i in range(2 * args.repeats):
        arm = "AB"[i % 2]
        if arm == "B":
            await _capped_loop(pool, 2 * args.rate)
        p50, p99 = await _open_loop(pool, args.rate, args.seconds, seed=i + 1)
        figures[arm].append((p50, p99))
        imported = "aiolimiter" in sys.modules
        print(f"{arm}: aiolimiter imported {imported!s:5}  send lag p50 {p50:7.1f} µs  p99 {p99:8.1f} µs", flush=True)
    for k, name in ((0, "p50"), (1, "p99")):
        a = statistics.median(f[k] for f in figures["A"])
        b = statistics.median(f[k] for f in figures["B"])
        print(f"send lag {name}: median A {a:.1f} µs, B {b:.1f} µs, B/A {b / a:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    uvloop.run(main(parser.parse_args()))
