"""A scenario's latency over time, read back from the run's interval log (``latency.hlog``).

The recorder writes every key's interval histograms once a second as ``Tag=scenario/class/metric`` lines
(client/recorder.py), and keeps writing empty ones for scenarios that have ended. This module reads the lines of
one metric, decoding only those (a long run's log holds thousands of lines, most of them other keys), and adds
the classes of a scenario together per interval, so the stability check (client/stability.py) and the report's
latency-over-time plot read the same numbers a user can re-read with HdrHistogram's own log tools.

Times are seconds after the log's start, the time base of ``evidence.window_in_log_s`` in results.json (the
measured window in the same seconds), so each interval can be placed in, or left out of, the window.

Example::

    >>> slices = read_slices(run_dir / "latency.hlog")["server"]        # doctest: +SKIP
    >>> [(round(s.end_s, 1), s.histogram.get_total_count()) for s in slices][:2]   # doctest: +SKIP
    [(3.0, 148), (4.0, 151)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client import hlog
from tailmark.client.verdict import buckets

FILE_NAME = "latency.hlog"
ALL = "all"  # the classes of a scenario added (as the recorder's and results' "all")
Buckets = tuple[np.ndarray, np.ndarray]  # upper edges (ns) and counts of the non-empty buckets, in value order


@dataclass(slots=True)
class Slice:
    """One interval of one scenario: its classes' histograms of one metric, added together (ns)."""

    start_s: float  # seconds after the log's start
    length_s: float
    histogram: HdrHistogram
    classes: dict[str, HdrHistogram] = field(default_factory=dict)  # each class's own

    @property
    def end_s(self) -> float:
        return self.start_s + self.length_s

    @property
    def count(self) -> int:
        return self.histogram.get_total_count()


def read_slices(
    path: str | Path, metric: str = "intended_to_done", scenario: str | None = None
) -> dict[str, list[Slice]]:
    """Scenario key -> its intervals of ``metric`` in time order (only ``scenario``'s, when given: the others'
    lines are not decoded); {} when the file is missing.

    A damaged line (a run killed mid-write) ends the reading: what came before it is kept."""
    out: dict[str, dict[float, Slice]] = {}
    try:
        handle = open(path, encoding="ascii")  # noqa: SIM115 -- closed below, also on a damaged line
    except OSError:
        return {}
    with handle:
        for line in handle:
            if not line.startswith("Tag="):
                continue
            parts = line.rstrip("\n").split(",")
            tag = parts[0][len("Tag=") :].split("/")
            if len(parts) != 5 or len(tag) != 3 or tag[2] != metric or scenario not in (None, tag[0]):
                continue
            key, traffic_class, _ = tag
            try:
                start_s, length_s = float(parts[1]), float(parts[2])
                histogram = hlog.decode(parts[4])
            except Exception:  # base64, zlib or float errors: a torn last line
                break
            slices = out.setdefault(key, {})
            entry = slices.get(round(start_s, 6))
            if entry is None:
                entry = slices[round(start_s, 6)] = Slice(start_s, length_s, hlog.new_histogram())
            entry.classes[traffic_class] = histogram
            hlog.add_into(entry.histogram, histogram)
    return {name: [slices[k] for k in sorted(slices)] for name, slices in out.items()}


def in_window(slices: list[Slice], window_s: tuple[float, float] | None, slack_s: float = 1e-3) -> list[Slice]:
    """The intervals that lie wholly inside the measured window; without a window (results from before
    ``window_in_log_s``), from the first interval that holds a request to the last."""
    if window_s is not None:
        begin, end = window_s
        return [s for s in slices if s.start_s >= begin - slack_s and s.end_s <= end + slack_s]
    held = [i for i, s in enumerate(slices) if s.count]
    return slices[held[0] : held[-1] + 1] if held else []


def around_window(slices: list[Slice], window_s: tuple[float, float] | None) -> list[Slice]:
    """The intervals that lie at least half inside the measured window, for plotting: partial intervals at its
    edges are kept, but not the one after its end that a long pause (the run writing its reports) stretched.
    Without a window, from the first interval that holds a request to the last."""
    if window_s is not None:
        begin, end = window_s
        return [s for s in slices if min(s.end_s, end) - max(s.start_s, begin) >= 0.5 * s.length_s]
    held = [i for i, s in enumerate(slices) if s.count]
    return slices[held[0] : held[-1] + 1] if held else []


def read_seconds(
    path: str | Path, metric: str, scenario: str, window_s: tuple[float, float] | None, slack_s: float = 1e-3
) -> dict[str, list[Buckets]]:
    """Each traffic class's whole seconds of ``metric`` inside the measured window, in time order, as compact
    buckets (upper edges, counts: ``verdict.buckets``), and the classes added under ``"all"``; {} without a
    window or a log. Each line is decoded and reduced at once, so a long run's seconds cost kilobytes each,
    not a 270 KB histogram (client/batch_means.py reads them)."""
    if window_s is None:
        return {}
    begin, end = window_s
    seconds: dict[float, dict[str, Buckets]] = {}
    try:
        handle = open(path, encoding="ascii")  # noqa: SIM115 -- closed below, also on a damaged line
    except OSError:
        return {}
    with handle:
        for line in handle:
            if not line.startswith("Tag="):
                continue
            parts = line.rstrip("\n").split(",")
            tag = parts[0][len("Tag=") :].split("/")
            if len(parts) != 5 or len(tag) != 3 or tag[0] != scenario or tag[2] != metric:
                continue
            try:
                start_s, length_s = float(parts[1]), float(parts[2])
                if start_s < begin - slack_s or start_s + length_s > end + slack_s:
                    continue
                reduced = buckets(hlog.decode(parts[4]))
            except Exception:  # base64, zlib or float errors: a torn last line
                break
            seconds.setdefault(round(start_s, 6), {})[tag[1]] = reduced
    classes = sorted({name for second in seconds.values() for name in second})
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    ordered = [seconds[k] for k in sorted(seconds)]
    out = {name: [second.get(name, empty) for second in ordered] for name in classes}
    out[ALL] = [merge_buckets(list(second.values())) for second in ordered]
    return out


def merge_buckets(parts: list[Buckets]) -> Buckets:
    """Several compact histograms of one layout added: counts of equal upper edges summed."""
    if len(parts) == 1:
        return parts[0]
    edges = np.concatenate([e for e, _ in parts]) if parts else np.zeros(0, np.int64)
    counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, np.int64)
    unique, position = np.unique(edges, return_inverse=True)
    return unique, np.bincount(position, weights=counts, minlength=len(unique)).astype(np.int64)
