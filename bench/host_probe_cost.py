"""What the host-noise probe costs: its own CPU, and what it does to the client beside it.

For each probe period: the probe's CPU (% of one core, from its own process time) while the client sits idle,
and a null-transport open loop (the client's issue path without a server) at ``--rate`` with and without the
probe on the same CPU: client CPU per request and send-lag p99. Printed as medians of ``--repeats`` runs and as
ratios against the run without the probe, measured in the same invocation.

    python bench/host_probe_cost.py [--periods-us 1000 2000] [--rate 5000] [--seconds 3] [--repeats 3] [--cpu 1]

The goal (issue 10): the probe costs at most 1 % of a core and does not change the client's figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import uvloop

from tailmark.client.dispatcher import NS, Dispatcher, Stop
from tailmark.client.host_probe import HostProbe
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.schedule import poisson
from tailmark.client.transport import ModelInfo, NullTransport, TensorInfo
from tailmark.client.verdict import percentile_ns

MODEL = ModelInfo("null", "1", "bench", (TensorInfo("INPUT0", "FP32", (-1,)),), (), 0)


def open_loop(rate: float, seconds: float) -> tuple[float, float]:
    """Client CPU per request (us) and send-lag p99 (ms) of a null-transport open loop."""

    async def main() -> tuple[float, float]:
        pool = random_pool(MODEL, count=8, seed=1)
        recorder = Recorder()
        dispatcher = Dispatcher(
            transport=NullTransport(MODEL), pool=pool, recorder=recorder, scenario="b", sample_seed=1
        )
        stop = Stop(min_duration_ns=int(seconds * NS), min_queries=0, max_duration_ns=int(seconds * NS))
        window = await dispatcher.open_loop(
            poisson(rate, seed=1), warmup_ns=int(0.5 * NS), stop=stop, max_outstanding=0
        )
        await dispatcher.drain(10)
        lag = recorder.histogram(("b", "default"), "send_lag")
        return 1e6 * window.cpu_s / max(lag.get_total_count(), 1), percentile_ns(lag, 99.0) / 1e6

    return uvloop.run(main())


def probe_alone(period_us: int, seconds: float) -> float:
    with HostProbe(period_us) as probe:
        time.sleep(0.5)  # the child's imports
        probe.reset()
        time.sleep(seconds)
        window = probe.report()
    return window.probe_cpu_pct if window else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods-us", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, help="pin this process (and so the probe) to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(f"cpus {sorted(os.sched_getaffinity(0))}; null-transport open loop at {args.rate:g}/s, {args.seconds:g} s")
    base = [open_loop(args.rate, args.seconds) for _ in range(args.repeats)]
    base_cpu = statistics.median(b[0] for b in base)
    base_lag = statistics.median(b[1] for b in base)
    print(f"{'probe':>10}  {'probe CPU %':>11}  {'client us/req':>13}  {'ratio':>6}  {'lag p99 ms':>10}  {'ratio':>6}")
    print(f"{'none':>10}  {'-':>11}  {base_cpu:13.2f}  {1.0:6.2f}  {base_lag:10.3f}  {1.0:6.2f}")
    for period in args.periods_us:
        cost = statistics.median(probe_alone(period, args.seconds) for _ in range(args.repeats))
        runs = []
        for _ in range(args.repeats):
            with HostProbe(period):
                time.sleep(0.5)
                runs.append(open_loop(args.rate, args.seconds))
        cpu = statistics.median(r[0] for r in runs)
        lag = statistics.median(r[1] for r in runs)
        print(
            f"{f'{period} us':>10}  {cost:11.2f}  {cpu:13.2f}  {cpu / base_cpu:6.2f}  {lag:10.3f}  "
            f"{lag / base_lag if base_lag else float('nan'):6.2f}"
        )


if __name__ == "__main__":
    main()
