"""A scenario's latency over time, read back from the run's interval log (``latency.hlog``).

The recorder writes every key's interval histograms once a second as ``Tag=scenario/class/metric`` lines
(client/recorder.py), and keeps writing empty ones for scenarios that have ended. This module reads the lines of
one metric, decoding only those (a long run's log holds thousands of lines, most of them other keys), and adds
the classes of a scenario together per interval, so the stability check (client/stability.py) and the report's
latency-over-time plot read the same numbers a user can re-read with HdrHistogram's own log tools. Each interval
is kept as its non-empty buckets (client/compact.py): a one-hour run's seconds as full histograms took 1.9 GB.

Times are seconds after the log's start, the time base of ``evidence.window_in_log_s`` in results.json (the
measured window in the same seconds), so each interval can be placed in, or left out of, the window.

Example::

    >>> slices = read_slices(run_dir / "latency.hlog")["server"]        # doctest: +SKIP
    >>> [(round(s.end_s, 1), s.count) for s in slices][:2]             # doctest: +SKIP
    [(3.0, 148), (4.0, 151)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tailmark.client import hlog
from tailmark.client.compact import Compact

FILE_NAME = "latency.hlog"


@dataclass(slots=True)
class Slice:
    """One interval of one scenario: its classes' histograms of one metric, added together (ns), compact."""

    start_s: float  # seconds after the log's start
    length_s: float
    histogram: Compact
    classes: dict[str, Compact] = field(default_factory=dict)  # each class's own

    @property
    def end_s(self) -> float:
        return self.start_s + self.length_s

    @property
    def count(self) -> int:
        return self.histogram.count


def read_slices(
    path: str | Path, metric: str = "intended_to_done", scenario: str | None = None
) -> dict[str, list[Slice]]:
    """Scenario key -> its intervals of ``metric`` in time order (only ``scenario``'s, when given: the others'
    lines are not decoded); {} when the file is missing. Each line is decoded and reduced at once.

    A damaged line (a run killed mid-write) ends the reading: what came before it is kept."""
    out: dict[str, dict[float, tuple[float, float, dict[str, Compact]]]] = {}  # scenario -> start -> its second
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
                reduced = Compact.of(hlog.decode(parts[4]))
            except Exception:  # base64, zlib or float errors: a torn last line
                break
            # a scenario's own length: its last, partial interval starts where another's whole one does
            out.setdefault(key, {}).setdefault(round(start_s, 6), (start_s, length_s, {}))[2][traffic_class] = reduced
    return {
        name: [Slice(start, length, Compact.merged(list(classes.values())), classes)
               for start, length, classes in (seconds[k] for k in sorted(seconds))]
        for name, seconds in out.items()
    }  # fmt: skip


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
