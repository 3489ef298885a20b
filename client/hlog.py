"""HDR histograms the way the recorder needs them: bulk recording, lossless adds, and ``.hlog`` interval logs.

This is a thin layer over HdrHistogram_py 0.10.8 (``hdrh``) that works around what it gets wrong or makes slow:

- ``record_value`` costs about 1.2 µs per call in pure Python. ``record_bulk`` computes the same counts-array
  indices with numpy (the ``_counts_index_for`` arithmetic, vectorised) and adds them in one pass, producing a
  histogram identical to recording the values one by one (counts, total, min, max, ``encode()`` bytes).
- ``HdrHistogram.add`` sets ``min`` to 0 when the added histogram is empty (it reads ``get_min_value()``, which
  answers 0 for an empty histogram). ``add_into`` adds the counts arrays and merges the raw trackers instead.
- ``reset()`` loops over every bucket in Python (~1 ms) and sets the start timestamp to ``sys.maxsize``;
  ``reset_fast`` zeroes the counts with numpy and leaves the timestamps alone.
- ``HistogramLogWriter.output_interval_histogram`` floors the max column (``//``), treats a start time of 0 as
  "take it from the histogram" and cannot write ``Tag=``; ``output_start_time`` always raises. ``HlogWriter``
  overrides both. Files it writes load with ``hdrh.log.HistogramLogReader`` (see ``read_hlog``) and follow the
  Java log format 1.2, so ``HistogramLogProcessor`` reads them too.

Values are integers in nanoseconds; a histogram spans 1 ns .. 1 h at 3 significant digits.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader, HistogramLogWriter

LOWEST_NS = 1
HIGHEST_NS = 3_600_000_000_000  # 1 h
SIGNIFICANT_FIGURES = 3
NS_PER_MS = 1_000_000.0  # the max column of an .hlog line is in ms, like the Java tools' default


class HlogError(ValueError):
    """An ``.hlog`` file or tag could not be used (the message says which line or tag)."""


def new_histogram() -> HdrHistogram:
    """An empty nanosecond histogram with the project's layout (1 ns .. 1 h, 3 significant digits)."""
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)


def max_recordable(histogram: HdrHistogram) -> int:
    """The largest value ``record_value`` accepts (the top of the last bucket, a little above the highest trackable)."""
    return histogram.get_highest_equivalent_value(histogram.get_value_from_index(histogram.counts_len - 1))


def counts_view(histogram: HdrHistogram) -> np.ndarray:
    """The histogram's live counts array as a numpy view (writes go straight into the histogram)."""
    return np.ctypeslib.as_array(histogram.counts)


def counts_indices(histogram: HdrHistogram, values: np.ndarray) -> np.ndarray:
    """Counts-array index of each value, exactly as ``HdrHistogram._counts_index_for`` computes it.

    ``values`` must be int64 in ``[0, max_recordable]``; below 2**53 the float64 exponent is the exact bit length.
    """
    h = histogram
    _, bit_length = np.frexp((values | h.sub_bucket_mask).astype(np.float64))
    bucket = bit_length.astype(np.int64) - (h.unit_magnitude + h.sub_bucket_half_count_magnitude + 1)
    sub_bucket = values >> (bucket + h.unit_magnitude)
    return ((bucket + 1) << h.sub_bucket_half_count_magnitude) + (sub_bucket - h.sub_bucket_half_count)


def _same_layout(a: HdrHistogram, b: HdrHistogram) -> bool:
    return (a.counts_len, a.unit_magnitude, a.sub_bucket_count, a.word_size) == (
        b.counts_len,
        b.unit_magnitude,
        b.sub_bucket_count,
        b.word_size,
    )


def record_bulk(histograms: Sequence[HdrHistogram], values: np.ndarray) -> int:
    """Record every in-range value into each of ``histograms`` (same layout); return how many were rejected.

    Rejected means what ``record_value`` rejects (negative, or above ``max_recordable``): those are skipped,
    never raised. The result is identical to calling ``record_value`` once per value on each histogram.
    """
    if not histograms or len(values) == 0:
        return 0
    first = histograms[0]
    if any(not _same_layout(first, h) for h in histograms[1:]):
        raise ValueError("record_bulk needs histograms of one layout")
    values = np.asarray(values, dtype=np.int64)
    top = max_recordable(first)
    if top >= 2**53:  # the frexp trick below would round; our layouts never get near this
        raise ValueError(f"histogram range up to {top} is too wide for bulk recording")
    in_range = (values >= 0) & (values <= top)
    rejected = len(values) - int(np.count_nonzero(in_range))
    if rejected:
        values = values[in_range]
        if len(values) == 0:
            return rejected
    indices = counts_indices(first, values)
    # bincount touches the whole counts array; for a handful of values the scattered add is cheaper
    if len(indices) * 8 >= first.counts_len:
        delta = np.bincount(indices, minlength=first.counts_len).astype(np.uint64)
        for h in histograms:
            counts_view(h)[:] += delta
    else:
        for h in histograms:
            np.add.at(counts_view(h), indices, np.uint64(1))
    low, high, n = int(values.min()), int(values.max()), len(values)
    for h in histograms:
        h.total_count += n
        h.min_value = min(h.min_value, low)
        h.max_value = max(h.max_value, high)
    return rejected


def add_into(dest: HdrHistogram, src: HdrHistogram) -> None:
    """Add ``src``'s counts to ``dest`` losslessly (upstream ``add`` of an empty ``src`` sets ``dest``'s min to 0)."""
    if src.total_count == 0:
        return
    if not _same_layout(dest, src):
        dest.add(src)  # upstream's per-bucket path goes through record_value and keeps min/max right
        return
    counts_view(dest)[:] += counts_view(src)
    dest.total_count += src.total_count
    dest.min_value = min(dest.min_value, src.min_value)
    dest.max_value = max(dest.max_value, src.max_value)


def reset_fast(histogram: HdrHistogram) -> None:
    """Empty the histogram in microseconds (upstream ``reset`` loops in Python and clobbers the start stamp)."""
    counts_view(histogram)[:] = 0
    histogram.total_count = 0
    histogram.min_value = sys.maxsize
    histogram.max_value = 0


def decode(blob: str | bytes) -> HdrHistogram:
    """A histogram from its base64 V2 encoding, refused unless it has the project's layout."""
    histogram = HdrHistogram.decode(blob)
    layout = (histogram.lowest_trackable_value, histogram.highest_trackable_value, histogram.significant_figures)
    if layout != (LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES):
        raise HlogError(
            f"histogram covers {layout[0]}..{layout[1]} at {layout[2]} significant figures; "
            f"expected {LOWEST_NS}..{HIGHEST_NS} at {SIGNIFICANT_FIGURES}"
        )
    return histogram


def check_tag(tag: str) -> str:
    """A tag as the log format allows it: non-empty, no comma, no whitespace."""
    if not tag or any(ch == "," or ch.isspace() for ch in tag):
        raise HlogError(f"hlog tag {tag!r} must be non-empty, without commas or whitespace")
    return tag


class HlogWriter(HistogramLogWriter):
    """``HistogramLogWriter`` with its bugs fixed and tags supported; writes to an open text file.

    Example::

        with open("run.hlog", "w") as f:
            log = HlogWriter(f)
            log.output_header(start_time_s=time.time())
            log.output_interval_histogram(h, 0.0, 1.0, tag="server/default/intended_to_done")
            f.flush()
    """

    def output_header(self, start_time_s: float, comment: str = "") -> None:
        """Comment, format version, start and base time (equal: interval stamps are relative), legend."""
        if comment:
            self.output_comment(comment)
        self.output_log_format_version()
        self.output_start_time(start_time_s * 1000.0)
        self.output_base_time(start_time_s * 1000.0)
        self.output_legend()

    def output_start_time(self, start_time_msec: float) -> None:
        # upstream passes ms to datetime.fromtimestamp and calls a missing .iso_format: always raises
        when = datetime.fromtimestamp(start_time_msec / 1000.0, tz=UTC).isoformat(" ", timespec="milliseconds")
        # same "%f" precision as upstream's BaseTime line: the reader drops intervals that seem to start before it
        self.log.write(f"#[StartTime: {start_time_msec / 1000.0:f} (seconds since epoch), {when}]\n")

    def output_interval_histogram(
        self,
        histogram: HdrHistogram,
        start_time_stamp_sec: float = 0.0,
        end_time_stamp_sec: float = 0.0,
        max_value_unit_ratio: float = NS_PER_MS,
        tag: str | None = None,
    ) -> None:
        # upstream: a start of 0 silently means "use the histogram's stamps", max is floored, no Tag=
        if not (math.isfinite(start_time_stamp_sec) and end_time_stamp_sec >= start_time_stamp_sec >= 0):
            raise HlogError(f"interval {start_time_stamp_sec}..{end_time_stamp_sec} s is not a forward interval")
        tag = tag if tag is not None else histogram.get_tag()
        prefix = f"Tag={check_tag(tag)}," if tag else ""
        self.log.write(
            f"{prefix}{start_time_stamp_sec:.6f},{end_time_stamp_sec - start_time_stamp_sec:.6f},"
            f"{histogram.get_max_value() / max_value_unit_ratio:.6f},{histogram.encode().decode('ascii')}\n"
        )


class Interval(NamedTuple):
    tag: str | None  # e.g. "server/default/intended_to_done"
    start_s: float  # seconds after the log's StartTime
    length_s: float
    histogram: HdrHistogram


def read_hlog(path: str | Path) -> Iterator[Interval]:
    """Every interval of an ``.hlog`` file in order, loaded with HdrHistogram_py's own ``HistogramLogReader``."""
    reader = HistogramLogReader(str(path), new_histogram())
    try:
        index = 0
        while True:
            try:
                # the default range starts at 0.0 and silently skips intervals a rounding error before StartTime
                histogram = reader.get_next_interval_histogram(range_start_time_sec=-math.inf)
            except Exception as exc:  # base64, zlib, cookie and float errors all mean a damaged line
                raise HlogError(f"{path}: interval {index}: cannot decode ({exc})") from None
            if histogram is None:
                return
            start_ms, end_ms = histogram.get_start_time_stamp(), histogram.get_end_time_stamp()
            start_s = start_ms / 1000.0 - reader.get_start_time_sec()
            yield Interval(histogram.get_tag(), round(start_s, 6), round((end_ms - start_ms) / 1000.0, 6), histogram)
            index += 1
    finally:
        reader.close()


def open_log(path: str | Path, start_time_s: float, comment: str = "") -> tuple[IO[str], HlogWriter]:
    """Create ``path`` and write the header; the caller flushes after each interval and closes the file."""
    handle = open(path, "w", encoding="ascii")  # noqa: SIM115 -- the caller owns and closes it
    writer = HlogWriter(handle)
    writer.output_header(start_time_s, comment)
    handle.flush()
    return handle, writer
