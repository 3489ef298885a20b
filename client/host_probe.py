"""The host-noise probe: how late does this host wake a sleeping thread on the client's cores?

A small child process (``python -m tailmark.client.host_probe``) does what cyclictest does: it sleeps to
absolute instants on a fixed period and records how late each wake-up came, in an HDR histogram (ns). It runs
on the client's CPUs (it inherits the affinity) but in a process of its own, so it has its own interpreter lock:
what it sees is the host (timer slack, idle CPUs waking from deep sleep, steal, neighbours, the scheduler), not
the client's event loop. The client's own send lag at low rates is made of the same wake-ups, which is why the
two can be compared (see docs/verdicts.md).

Around it, the parent reads what only it can, over the same window: CPU steal time of its CPUs (``/proc/stat``),
its own voluntary/involuntary context switches (``getrusage``), and how long its event-loop thread waited,
runnable, for a CPU (``/proc/thread-self/schedstat``). A sleeper like the probe is favoured by the scheduler when
it wakes, so on a core shared with busy neighbours it can look quiet while the client, which runs and spins,
waits its turn; the run-queue wait shows that case.

The parent drives the child with one-line commands on its stdin: ``reset`` (start a new window; no answer, so it
costs the event loop nothing mid-run) and ``report`` (answer one JSON line: the window's histogram, per-second
p99 and max, wake-ups, missed periods and the probe's own CPU time). The default period, 2 ms, cost 0.9 % of
one core on a 2-core VM (1 ms: 1.4 %); the sleeping thread only appends, and histograms fill once a second.
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client import hlog

DEFAULT_PERIOD_US = 2000
NS = 1_000_000_000
READY_TIMEOUT_S = 30.0  # the probe child's start-up, on the most crowded host we care to measure on


# --- the child: the sleeping thread ---


class _Window:
    """What the child measured since the last reset. The sleeping thread only appends to ``pending``; the
    histograms are filled in bulk once a second (and at a report), under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[int] = []  # lateness of wake-ups not yet in the histograms, ns
        self._fresh()

    def _fresh(self) -> None:
        self.histogram = hlog.new_histogram()
        self.per_s: list[tuple[int, int]] = []  # (p99, max) of each whole second, ns
        self.wakeups = 0
        self.missed = 0  # periods skipped because a wake-up came more than a period late
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def reset(self) -> None:
        with self.lock:
            self.pending.clear()
            self._fresh()

    def fold(self, whole_second: bool) -> None:
        """Move pending wake-ups into the window's histogram; a whole second also adds a per-second point."""
        with self.lock:
            values, self.pending = self.pending, []
            if not values:
                return
            array = np.minimum(np.asarray(values, dtype=np.int64), hlog.HIGHEST_NS)
            self.wakeups += len(values)
            hlog.record_bulk((self.histogram,), array)
            if whole_second:
                self.per_s.append((int(np.percentile(array, 99, method="higher")), int(array.max())))

    def report(self) -> dict[str, Any]:
        self.fold(whole_second=False)
        with self.lock:
            return {
                "histogram": self.histogram.encode().decode("ascii"),
                "per_s": self.per_s,
                "wakeups": self.wakeups,
                "missed": self.missed,
                "cpu_s": time.process_time() - self.cpu0,
                "wall_s": time.perf_counter() - self.wall0,
            }


def _sleep_loop(window: _Window, period_ns: int) -> None:
    """Sleep to absolute instants ``period_ns`` apart; note how late each wake-up was (an append, no more)."""
    target = time.perf_counter_ns() + period_ns
    next_fold = target + NS
    while True:
        gap = target - time.perf_counter_ns()
        if gap > 0:
            time.sleep(gap / NS)  # clock_nanosleep on Linux: the kernel's timer, not a spin
        now = time.perf_counter_ns()
        window.pending.append(max(now - target, 0))
        target += period_ns
        if target <= now:  # more than a period late: skip the instants that already passed
            missed = (now - target) // period_ns + 1
            target += missed * period_ns
            window.missed += missed
        if now >= next_fold:
            window.fold(whole_second=True)
            next_fold += NS


def _child(period_us: int) -> None:
    window = _Window()
    threading.Thread(target=_sleep_loop, args=(window, period_us * 1000), daemon=True).start()
    sys.stdout.write("ready\n")  # the parent's windows start after this: one opened sooner would be empty
    sys.stdout.flush()
    for line in sys.stdin:
        command = line.strip()
        if command == "reset":
            window.reset()
        elif command == "report":
            sys.stdout.write(json.dumps(window.report()) + "\n")
            sys.stdout.flush()
        elif command == "quit":
            return


# --- the parent's side ---


@dataclass(frozen=True, slots=True)
class ProbeWindow:
    """One window's evidence about the host: the probe's wake-up lateness and the parent's own counters."""

    period_us: int
    lateness: HdrHistogram  # ns
    per_s: tuple[tuple[int, int], ...]  # (p99, max) per second, ns
    wakeups: int
    missed: int
    probe_cpu_pct: float  # the probe's own cost, % of one core
    wall_s: float
    steal_pct: float | None  # CPU steal on the client's CPUs, % of their time; None: not known here
    involuntary_switches: int | None  # the client process's, over the window
    voluntary_switches: int | None
    cpus: tuple[int, ...] = field(default=())
    client_wait_ms: float | None = None  # the client's event-loop thread, runnable but not running (the host's doing)

    @property
    def client_wait_pct(self) -> float | None:
        """The client's run-queue wait as a share of the window."""
        return None if self.client_wait_ms is None else 100.0 * self.client_wait_ms / 1e3 / self.wall_s

    @property
    def held_pct(self) -> float | None:
        """The share of the window the host held the probe more than a whole period late (its missed instants):
        time-weighted, unlike the lateness percentiles, which count one wake-up per stall however long."""
        return None if self.wall_s <= 0 else 100.0 * self.missed * self.period_us / 1e6 / self.wall_s

    def lateness_ns(self, percentile: float) -> int:
        from tailmark.client.verdict import percentile_ns

        return percentile_ns(self.lateness, percentile)

    def to_dict(self) -> dict[str, Any]:
        from tailmark.client.results import latency_summary

        return {
            "period_us": self.period_us,
            "wakeups": self.wakeups,
            "missed_periods": self.missed,
            "held_pct": None if self.held_pct is None else round(self.held_pct, 3),
            "late_ms": latency_summary(self.lateness),
            "late_p99_per_s_ms": [round(p99 / 1e6, 6) for p99, _ in self.per_s],
            "late_max_per_s_ms": [round(top / 1e6, 6) for _, top in self.per_s],
            "probe_cpu_pct": round(self.probe_cpu_pct, 3),
            "steal_pct": None if self.steal_pct is None else round(self.steal_pct, 3),
            "involuntary_switches": self.involuntary_switches,
            "voluntary_switches": self.voluntary_switches,
            "cpus": list(self.cpus),
            "window_s": round(self.wall_s, 3),
            "client_wait_ms": None if self.client_wait_ms is None else round(self.client_wait_ms, 3),
        }


def _cpus() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return ()


def _steal_ticks(cpus: tuple[int, ...]) -> tuple[int, int] | None:
    """(steal, total) jiffies summed over ``cpus`` from /proc/stat; None where there is no /proc/stat."""
    wanted = {f"cpu{c}" for c in cpus}
    steal = total = 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if name in wanted:
                    ticks = [int(x) for x in rest.split()]
                    total += sum(ticks[:8])  # user..steal; guest time is already inside user
                    steal += ticks[7] if len(ticks) > 7 else 0
    except (OSError, ValueError):
        return None
    return (steal, total) if total else None


def _switches() -> tuple[int, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nivcsw, usage.ru_nvcsw


def _run_queue_wait_ns() -> int | None:
    """How long the calling thread has waited, runnable, for a CPU (Linux schedstat); None where unknown."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


class HostProbe:
    """Starts the probe child; ``reset()`` opens a window, ``report()`` closes it. A context manager."""

    def __init__(self, period_us: int = DEFAULT_PERIOD_US) -> None:
        if period_us < 100:
            raise ValueError(f"period_us={period_us} requested; must be >= 100")
        self.period_us = period_us
        self._process: subprocess.Popen | None = None
        self._cpus = _cpus()
        self._steal0: tuple[int, int] | None = None
        self._switches0 = (0, 0)
        self._wait0: int | None = None

    def __enter__(self) -> HostProbe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tailmark.client.host_probe", str(self.period_us)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C for the client must not kill the probe before its last report
        )
        # wait until it runs (a Python start-up: ~0.1 s, seconds on a crowded host); one that never says so is
        # stopped, and every window then reports None (not probed) rather than an empty window
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], READY_TIMEOUT_S)
        if not ready or self._process.stdout.readline().strip() != "ready":
            self.close()
            return
        self._mark()

    def _send(self, command: str) -> IO[str] | None:
        process = self._process
        if process is None or process.poll() is not None or process.stdin is None:
            return None
        try:
            process.stdin.write(command + "\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        return process.stdout

    def _mark(self) -> None:
        self._steal0 = _steal_ticks(self._cpus)
        self._switches0 = _switches()
        self._wait0 = _run_queue_wait_ns()  # reset and report are called from the event loop's thread

    def reset(self) -> None:
        """Start a new window now (a few microseconds: one pipe write, two counter reads)."""
        self._send("reset")
        self._mark()

    def report(self) -> ProbeWindow | None:
        """Close the window started by the last ``reset``; None if the probe is not running."""
        out = self._send("report")
        line = out.readline() if out is not None else ""
        if not line:
            return None
        data = json.loads(line)
        steal_pct = None
        steal1 = _steal_ticks(self._cpus)
        if self._steal0 is not None and steal1 is not None and steal1[1] > self._steal0[1]:
            steal_pct = 100.0 * (steal1[0] - self._steal0[0]) / (steal1[1] - self._steal0[1])
        invol, vol = (a - b for a, b in zip(_switches(), self._switches0, strict=True))
        wait1 = _run_queue_wait_ns()
        wait_ms = (wait1 - self._wait0) / 1e6 if wait1 is not None and self._wait0 is not None else None
        wall = max(float(data["wall_s"]), 1e-9)
        return ProbeWindow(
            period_us=self.period_us,
            lateness=hlog.decode(data["histogram"]),
            per_s=tuple((int(a), int(b)) for a, b in data["per_s"]),
            wakeups=int(data["wakeups"]),
            missed=int(data["missed"]),
            probe_cpu_pct=100.0 * float(data["cpu_s"]) / wall,
            wall_s=wall,
            steal_pct=steal_pct,
            involuntary_switches=invol,
            voluntary_switches=vol,
            cpus=self._cpus,
            client_wait_ms=wait_ms,
        )

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.write("quit\n")
                process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            process.wait(2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    _child(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PERIOD_US)
