"""Within-run stability, as perf_analyzer judges it: were throughput and latency steady over the last windows?

perf_analyzer measures in windows (5 s by default) and calls a measurement stable when, over the last 3 windows,
every window completed requests and max/min of both the throughput and the latency is at most
1 + ``--stability-percentage``/100 (10 % by default); its latency is the average unless a percentile is asked for.
``tailmark run --stability-percentage P [--stability-windows N] [--stability-window-s S]`` applies the same rule
to each scenario's measured window, after the fact: the windows are made of the recorder's one-second intervals
(``latency.hlog``, read by client/timeline.py) that lie wholly inside the measured window, S seconds each,
counted back from the last whole interval. It reports; it never changes the verdict, stops or extends a run, or
drops a window (perf_analyzer keeps measuring until stable; here every interval stays in the log for a reader to
judge again). The latency is intended -> done (the run's headline), its mean per window; each window's p99 is
kept beside it.

The answer is ``evidence.stability`` of each scenario in results.json, one console line and a column of
summary.csv. ``stable`` is None when the window holds fewer than N whole windows (run longer or shorten S).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tailmark.client.compact import Compact
from tailmark.client.timeline import Slice, in_window

DEFAULT_PERCENTAGE = 10.0  # perf_analyzer's --stability-percentage
DEFAULT_WINDOWS = 3  # perf_analyzer's hard-coded stability window count
DEFAULT_WINDOW_S = 2.0  # three of them fit in the default 10 s scenario with room for the warm-up's edge


@dataclass(frozen=True, slots=True)
class StabilitySettings:
    percentage: float = DEFAULT_PERCENTAGE
    windows: int = DEFAULT_WINDOWS
    window_s: float = DEFAULT_WINDOW_S

    def __post_init__(self) -> None:
        if not self.percentage > 0:
            raise ValueError(f"--stability-percentage {self.percentage:g}: must be > 0")
        if self.windows < 2:
            raise ValueError(f"--stability-windows {self.windows}: must be >= 2")
        if not self.window_s > 0:
            raise ValueError(f"--stability-window-s {self.window_s:g}: must be > 0")


def steady(values: Sequence[float], percentage: float) -> bool:
    """perf_analyzer's test of one measure over its last measurements: all positive, max/min <= 1 + percentage/100."""
    return min(values) > 0 and max(values) / min(values) <= 1.0 + percentage / 100.0


def windows_of(slices: list[Slice], window_s: float) -> list[list[Slice]]:
    """Consecutive groups of whole intervals, ``window_s`` seconds each (at least one interval), counted back from
    the last interval; a shorter group left at the start is dropped."""
    if not slices:
        return []
    typical = sorted(s.length_s for s in slices)[len(slices) // 2]
    per = max(1, round(window_s / typical)) if typical > 0 else 1
    groups = [slices[end - per : end] for end in range(len(slices), per - 1, -per)]
    return groups[::-1]


def _window_doc(group: list[Slice]) -> dict[str, Any]:
    merged = Compact.merged([s.histogram for s in group])
    length = sum(s.length_s for s in group)
    n = merged.count
    return {
        "start_s": round(group[0].start_s, 3),
        "length_s": round(length, 3),
        "queries": n,
        "rate_qps": round(n / length, 3) if length > 0 else 0.0,
        "mean_ms": round(merged.mean_value() / 1e6, 6) if n else None,
        "p99_ms": round(merged.value_at_percentile(99.0) / 1e6, 6) if n else None,
    }


def judge(
    slices: list[Slice], window_in_log_s: tuple[float, float] | None, settings: StabilitySettings
) -> dict[str, Any]:
    """perf_analyzer's rule over the last ``settings.windows`` windows of one scenario's intervals."""
    doc: dict[str, Any] = {
        "rule": "perf_analyzer: every window completed requests, and max/min <= 1 + percentage/100 for the rate and "
        "for the mean intended -> done latency",
        "percentage": settings.percentage,
        "windows": settings.windows,
        "window_s": settings.window_s,
    }
    groups = windows_of(in_window(slices, window_in_log_s), settings.window_s)
    last = [_window_doc(g) for g in groups[-settings.windows :]]
    doc["per_window"] = last
    if len(groups) < settings.windows:
        doc["stable"] = None
        doc["detail"] = (
            f"not judged: the measured window holds {len(groups)} whole {settings.window_s:g} s windows and the check "
            f"needs {settings.windows}: run longer (--duration) or shorten --stability-window-s"
        )
        return doc
    limit = 1.0 + settings.percentage / 100.0
    moving = []
    rates = [w["rate_qps"] for w in last]
    means = [w["mean_ms"] for w in last]
    if min(rates) <= 0 or None in means:
        moving.append("a window completed no request")
    else:
        if not steady(rates, settings.percentage):
            moving.append(f"rate {min(rates):.1f}..{max(rates):.1f}/s")
        if not steady(means, settings.percentage):
            moving.append(f"mean latency {min(means):.3f}..{max(means):.3f} ms")
    doc["stable"] = not moving
    span = f"the last {settings.windows} windows of {settings.window_s:g} s"
    if moving:
        doc["detail"] = f"not stable over {span}: {', '.join(moving)} (max/min beyond {limit:g})"
    else:
        doc["detail"] = (
            f"stable over {span}: rate {min(rates):.1f}..{max(rates):.1f}/s and mean latency "
            f"{min(means):.3f}..{max(means):.3f} ms, max/min within {limit:g}"
        )
    return doc
