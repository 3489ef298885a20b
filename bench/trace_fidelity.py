"""Replay fidelity: per-second arrival counts and send lag of traces replayed against the null model.

Default: each trace in traces/samples/ is replayed (sped up to last about --seconds) through tailmark's
dispatcher to `tailmark serve`'s `null` model on loopback. For each: the worst per-second count error against
the trace (seconds with at least 20 arrivals), and send lag p50/p99/max. Batch sizes are set to 1 (the `null`
model takes no batch dimension): fidelity is about when requests leave.

    python bench/trace_fidelity.py [--seconds 10]

--tokens TRACE: the same timestamps of a token-carrying trace (e.g. `tailmark trace import --format azure-llm`
of the Azure LLM 2023 trace) replayed five ways, interleaved, --repeats times, medians printed with ratios:

  timestamps-old  token counts dropped (--resize-inputs none): every request is one of the pool's 64,
                  each taken at its send (no look-ahead): the old path
  tokens-old      token counts resize the input (--resize-inputs tokens), each new (sample, size) built with
                  numpy and protobuf at its send: the old path, the baseline
  timestamps      token counts dropped, the default path (look-ahead)
  tokens-cut      token counts resize the input, cut from a per-(sample, batch) template at its send
  tokens-new      ... cut from a template and built ahead of its instant in the loop's idle time (the default)

The null model's input is FP32 [-1], so `auto` would not resize it: the bench asks for `tokens`. Client and
server are pinned to disjoint CPUs when there are at least two (--client-cpus, --server-cpus).

    python bench/trace_fidelity.py --tokens conv.jsonl --speed 60 --window 30 --repeats 3

Measured (2-core VM shared with other agents' light work, client pinned to CPU 0 and `tailmark serve` to CPU 1,
h2 transport; the Azure LLM 2023 conversation trace imported with `tailmark trace import --format azure-llm`,
medians of 3 interleaved runs of each mode; send lag p50 / p99 in ms):

    --speed 60 --window 30 (10,108 requests a run, 8,688 of them new (sample, size) pairs)
      timestamps-old 0.106 / 0.289   tokens-old 0.188 / 0.487   (tokens / timestamps: 1.78x / 1.68x)
      timestamps     0.041 / 0.153   tokens-new 0.053 / 0.207   (tokens / timestamps: 1.28x / 1.35x)
      tokens-cut     0.123 / 0.358;  tokens-old / tokens-new: 3.56x / 2.36x
    --speed 120 --window 15
      timestamps-old 0.086 / 0.274   tokens-old 0.152 / 0.437   (1.78x / 1.59x)
      timestamps     0.032 / 0.117   tokens-new 0.030 / 0.115   (0.92x / 0.98x)
      tokens-cut     0.115 / 0.320;  tokens-old / tokens-new: 5.15x / 3.81x

What remains between tokens-new and timestamps at 60x is presumably the sending of larger messages (~5 KB of FP32
on average against 91 bytes), not their building: every request was built ahead of its send.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tailmark.client.dispatcher import NS, Dispatcher, Stop
from tailmark.client.h2_transport import H2Transport
from tailmark.client.lookahead import DEPTH
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.transport import GrpcTransport
from tailmark.traces.reader import read_arrivals

SAMPLES = Path(__file__).resolve().parents[1] / "traces" / "samples"
MODES = ("timestamps-old", "tokens-old", "timestamps", "tokens-cut", "tokens-new")
OLD_PATH = ("timestamps-old", "tokens-old", "tokens-cut")  # no look-ahead


async def replay(target: str, path: Path, speed: float):
    transport = await GrpcTransport.connect(target)
    try:
        pool = random_pool(await transport.model_info("null"), count=8, seed=1)
        recorder = Recorder()
        dispatcher = Dispatcher(transport=transport, pool=pool, recorder=recorder, scenario="t", sample_seed=1)
        never = Stop(min_duration_ns=2**62, min_queries=2**62)
        window = await dispatcher.open_loop(
            (arrival._replace(batch_size=1) for arrival in read_arrivals(path, speed=speed)),
            warmup_ns=0,
            stop=never,
            max_outstanding=0,
        )
        await dispatcher.drain(30)
        recorder.flush()
        return window, recorder
    finally:
        await transport.aclose()


def shipped_traces(seconds: float) -> int:
    from support.serve import ServerProcess
    from tailmark.server.default_repository import ensure_default_repository

    print(f"{'trace':<28} {'speed':>6} {'arrivals':>8} {'count err':>9} {'lag p50':>8} {'lag p99':>8} {'lag max':>8}")
    with ServerProcess(ensure_default_repository()) as server:
        for path in sorted(SAMPLES.glob("*.jsonl")):
            offsets = np.array([a.offset_ns for a in read_arrivals(path)])
            speed = max(offsets[-1] / NS / seconds, 1.0)
            expected = np.bincount((offsets / speed).astype(np.int64) // NS)
            window, recorder = uvloop.run(replay(server.target, path, speed))
            sent = np.zeros_like(expected)
            got = np.array(window.sends_per_s[: len(expected)])
            sent[: len(got)] = got
            busy = expected >= 20
            error = (np.abs(sent - expected)[busy] / expected[busy]).max() if busy.any() else 0.0
            lag = recorder.histogram(("t", "all"), "send_lag")
            p50, p99, top = (lag.get_value_at_percentile(50) / 1e6, lag.get_value_at_percentile(99) / 1e6,
                             lag.get_max_value() / 1e6)  # fmt: skip
            print(f"{path.stem:<28} {speed:>6.1f} {len(offsets):>8} {100 * error:>8.2f}% {p50:>7.3f}ms "
                  f"{p99:>7.3f}ms {top:>7.3f}ms", flush=True)  # fmt: skip
    return 0


# --- token-carrying trace: token-driven payloads against the same timestamps without ---


async def token_replay(target: str, transport_kind: str, path: Path, speed: float, window_s: float, mode: str):
    transport = await (H2Transport if transport_kind == "h2" else GrpcTransport).connect(target)
    try:
        pool = random_pool(await transport.model_info("null"), count=64, seed=1)  # tailmark run's --pool-size
        pool.use_templates = mode in ("tokens-cut", "tokens-new")
        recorder = Recorder()
        dispatcher = Dispatcher(
            transport=transport,
            pool=pool,
            recorder=recorder,
            scenario="t",
            sample_seed=1,
            resize_inputs="tokens" if mode.startswith("tokens") else "none",
            lookahead_depth=0 if mode in OLD_PATH else DEPTH,
        )
        stop = Stop(min_duration_ns=2**62, min_queries=2**62, max_duration_ns=int(window_s * NS))
        gc.collect()
        gc.freeze()  # as `tailmark run` does
        window = await dispatcher.open_loop(
            (a._replace(batch_size=1) for a in read_arrivals(path, speed=speed)),
            warmup_ns=0,
            stop=stop,
            max_outstanding=0,
        )
        await dispatcher.drain(30)
        recorder.flush()
        lag = recorder.histogram(("t", "all"), "send_lag")
        return {
            "sent": lag.get_total_count(),
            "p50": lag.get_value_at_percentile(50) / 1e6,
            "p99": lag.get_value_at_percentile(99) / 1e6,
            "max": lag.get_max_value() / 1e6,
            "cpu": 100 * window.cpu_s / max(window.duration_s, 1e-9),
            "ahead": dispatcher.lookahead.built_ahead,
            "builds": pool.builds,
            "errors": dispatcher.failed,
        }
    finally:
        gc.unfreeze()
        await transport.aclose()


@contextlib.contextmanager
def pinned(cpus: set[int] | None):
    """This process (and what it starts meanwhile) on ``cpus``; the previous affinity restored after."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpus(spec: str) -> set[int] | None:
    return {int(c) for c in spec.split(",")} if spec else None


def token_trace(args: argparse.Namespace) -> int:
    from support.serve import ServerProcess
    from tailmark.server.default_repository import ensure_default_repository

    two = (os.cpu_count() or 1) >= 2
    client_cpus = _cpus(args.client_cpus if args.client_cpus is not None else ("0" if two else ""))
    server_cpus = _cpus(args.server_cpus if args.server_cpus is not None else ("1" if two else ""))
    sys.setswitchinterval(0.0005)  # as `tailmark run` does
    print(f"trace {args.tokens} at {args.speed:g}x, {args.window:g} s windows, {args.transport} transport, "
          f"client CPUs {sorted(client_cpus or [])}, server CPUs {sorted(server_cpus or [])}")  # fmt: skip
    print(f"{'run':>3} {'mode':<14} {'sent':>6} {'lag p50':>9} {'lag p99':>9} {'lag max':>9} {'CPU':>5} "
          f"{'built ahead':>11} {'builds':>7}")  # fmt: skip
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with pinned(server_cpus):
        server = ServerProcess(ensure_default_repository())
    try:
        with pinned(client_cpus):
            uvloop.run(token_replay(server.target, args.transport, args.tokens, args.speed, 2.0, "tokens-new"))  # warm
            for repeat in range(args.repeats):
                for mode in MODES:
                    row = uvloop.run(
                        token_replay(server.target, args.transport, args.tokens, args.speed, args.window, mode)
                    )
                    runs[mode].append(row)
                    print(f"{repeat + 1:>3} {mode:<14} {row['sent']:>6} {row['p50']:>7.3f}ms {row['p99']:>7.3f}ms "
                          f"{row['max']:>7.2f}ms {row['cpu']:>4.0f}% {row['ahead']:>11} {row['builds']:>7}"
                          + (f"  {row['errors']} errors" if row["errors"] else ""), flush=True)  # fmt: skip
                    time.sleep(1.0)
    finally:
        server.terminate()
    med = {mode: {k: statistics.median(r[k] for r in runs[mode]) for k in ("p50", "p99", "max")} for mode in MODES}
    print(f"\nmedians of {args.repeats}:")
    for mode in MODES:
        m = med[mode]
        print(f"  {mode:<14} send lag p50 {m['p50']:.3f} ms  p99 {m['p99']:.3f} ms  max {m['max']:.2f} ms")
    for tokens, timestamps in (
        ("tokens-old", "timestamps-old"),
        ("tokens-cut", "timestamps-old"),
        ("tokens-new", "timestamps"),
    ):
        t, b = med[tokens], med[timestamps]
        print(f"  {tokens} / {timestamps}: p50 {t['p50'] / b['p50']:.2f}x  p99 {t['p99'] / b['p99']:.2f}x")
    old, new = med["tokens-old"], med["tokens-new"]
    print(f"  tokens-old / tokens-new: p50 {old['p50'] / new['p50']:.2f}x  p99 {old['p99'] / new['p99']:.2f}x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="replay length of each shipped trace")
    parser.add_argument("--tokens", type=Path, help="token-carrying trace: compare token-driven payloads (see above)")
    parser.add_argument("--speed", type=float, default=60.0, help="--tokens: replay speed (default 60)")
    parser.add_argument("--window", type=float, default=30.0, help="--tokens: seconds replayed per run (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="--tokens: runs of each mode, interleaved (default 3)")
    parser.add_argument("--transport", choices=("h2", "grpc"), default="h2", help="--tokens: client transport")
    parser.add_argument("--client-cpus", help="--tokens: CPUs of the client, e.g. 0 (default 0 with >= 2 CPUs)")
    parser.add_argument("--server-cpus", help="--tokens: CPUs of the server, e.g. 1 (default 1 with >= 2 CPUs)")
    args = parser.parse_args()
    if args.tokens:
        return token_trace(args)
    return shipped_traces(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
