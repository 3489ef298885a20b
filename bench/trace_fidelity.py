"""Replay fidelity of every shipped trace: per-second arrival counts and send lag, against the null model.

Each trace in traces/samples/ is replayed (sped up to last about --seconds) through tailmark's dispatcher
to `tailmark serve`'s `null` model on loopback. For each: the worst per-second count error against the
trace (seconds with at least 20 arrivals), and send lag p50/p99/max. Batch sizes are set to 1 (the
`null` model takes no batch dimension): fidelity is about when requests leave.

    python bench/trace_fidelity.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tailmark.client.dispatcher import NS, Dispatcher, Stop
from tailmark.client.recorder import Recorder
from tailmark.client.samples import random_pool
from tailmark.client.transport import GrpcTransport
from tailmark.traces.reader import read_arrivals

SAMPLES = Path(__file__).resolve().parents[1] / "traces" / "samples"


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="replay length of each trace")
    args = parser.parse_args()
    from support.serve import ServerProcess
    from tailmark.server.default_repository import ensure_default_repository

    print(f"{'trace':<28} {'speed':>6} {'arrivals':>8} {'count err':>9} {'lag p50':>8} {'lag p99':>8} {'lag max':>8}")
    with ServerProcess(ensure_default_repository()) as server:
        for path in sorted(SAMPLES.glob("*.jsonl")):
            offsets = np.array([a.offset_ns for a in read_arrivals(path)])
            speed = max(offsets[-1] / NS / args.seconds, 1.0)
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


if __name__ == "__main__":
    sys.exit(main())
