"""How fast one client process issues KServe-v2 REST requests on schedule, beside tritonclient.http.aio, and
what the REST frontend costs the server: both measured in the same run, run by hand.

Client (bench/client_ceiling.py's method): Poisson rates stepped up until the send-lag p99 passes 1 ms, a
request fails or under 98 % complete, against `tailmark serve --http-port`'s ``null`` model on loopback:

  tailmark/http       tailmark's dispatcher over ``--transport http`` (binary tensors)
  tailmark/http-json  the same with ``--http-json``
  tritonclient.http   a plain tritonclient.http.aio open-loop client (one task per request): the baseline

Server (closed loop, tailmark's http transport as the client, 1 and 16 in flight): requests/s and the
server process's CPU µs per request for the REST frontend beside the h2 gRPC frontend of the same process.

    python -m tailmark.bench.http_ceiling [--step-seconds 3] [--rates 1000 2000 3000 4000 6000]

Measured (2-core VM shared with other work, 2026-12-06, ``--step-seconds 2 --rates 1000 2000 3000 4000``):
tailmark/http 2000/s (send-lag p99 0.85 ms, 209 µs CPU per request; 3000/s failed at 14 ms), tailmark/http-json
and tritonclient.http.aio failed already at 1000/s (lag p99 2.4 and 3.5 ms; 251 and 626 µs CPU per request).
Server, closed loop on identity [16]: REST 2,560/s at 1 in flight and 2,740/s at 16 (250 and 233 µs server
CPU per request) against the h2 gRPC frontend's 6,450/s and 17,000/s (97 and 57 µs): REST costs the server
about 4x the CPU of tailmark's gRPC path. Where it goes (2026-12-06, 16 in flight on identity [16], box loaded by
other work): /proc/PID/io counts 1.00 read and 1.00 write syscall per REST request against 0.08 for h2, whose
one connection carries ~12 answers per write; py-spy (`py-spy record -r 500` on the server) puts 28 % of the REST
frontend's samples on that one ``transport.write`` per answer, ~25 % in h11 (parsing the request, framing the
answer), ~10 % in routing and JSON, and the core's decode/infer/encode ~15 %: HTTP/1.1 answers one request per
connection per write, so its syscalls and h11 per request are the price, not the core.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tailmark.bench.client_ceiling import ceiling, tailmark_step, tritonclient_open_loop
from tailmark.client.h2_transport import H2Transport
from tailmark.client.http_transport import HttpTransport
from tailmark.client.samples import random_pool


async def tritonclient_http_step(url: str, rate: float, seconds: float) -> dict:
    import tritonclient.http.aio as aio

    client = aio.InferenceServerClient(url, conn_limit=64)
    tensor = aio.InferInput("INPUT0", [16], "FP32")
    tensor.set_data_from_numpy(np.zeros(16, np.float32))
    return await tritonclient_open_loop(client, tensor, rate, seconds)


async def closed_loop(transport, payload: bytes, inflight: int, server: psutil.Process, count: int) -> tuple:
    for _ in range(50):
        await transport.infer(payload)
    done = 0

    async def worker():
        nonlocal done
        while done < count:
            done += 1
            await transport.infer(payload)

    times = server.cpu_times()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    wall = time.perf_counter() - started
    after = server.cpu_times()
    cpu = (after.user + after.system) - (times.user + times.system)
    return done / wall, 1e6 * cpu / done


async def main(args) -> int:
    from support.serve import ServerProcess
    from tailmark.server.default_repository import ensure_default_repository

    with ServerProcess(ensure_default_repository(), "--http-port", "0") as server:
        address = next(line for line in server.lines if "REST on http://" in line).split("REST on http://")[1]
        url = f"http://{address.split()[0]}"
        results = {}
        for name, json_tensors in (("tailmark/http", False), ("tailmark/http-json", True)):
            transport = await HttpTransport.connect(url, connections=16, json_tensors=json_tensors)
            info = await transport.model_info("null")
            results[name] = await ceiling(
                name, lambda r, t=transport, i=info: tailmark_step(t, i, r, args.step_seconds), args.rates
            )
            await transport.aclose()
        results["tritonclient.http"] = await ceiling(
            "tritonclient.http", lambda r: tritonclient_http_step(url[7:], r, args.step_seconds), args.rates
        )
        print("\nclient              ceiling (req/s, send-lag p99 <= 1 ms)   CPU µs/req at ceiling")
        for name, (rate, step) in results.items():
            cpu = step["cpu_us"] if step else float("nan")
            print(f"{name:<19} {rate:>10.0f}                            {cpu:8.1f}")

        print("\nserver frontend (closed loop, identity [16])   in flight   req/s   server CPU µs/req")
        process = psutil.Process(server.process.pid)
        rest = await HttpTransport.connect(url, connections=16)
        grpc = await H2Transport.connect(server.target)
        info = await grpc.model_info("identity")
        payload = random_pool(info, count=1, seed=1, shapes={"INPUT0": (16,)}).payload(0)
        for name, transport in (("REST (--http-port)", rest), ("gRPC (h2)", grpc)):
            for inflight in (1, 16):
                rate, cpu = await closed_loop(transport, payload, inflight, process, args.requests)
                print(f"  {name:<44} {inflight:>4}   {rate:7.0f}   {cpu:8.1f}", flush=True)
        await rest.aclose()
        await grpc.aclose()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 3000, 4000, 6000])
    parser.add_argument("--requests", type=int, default=3000, help="closed-loop requests per server figure")
    sys.exit(uvloop.run(main(parser.parse_args())))
