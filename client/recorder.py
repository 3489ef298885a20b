"""The recorder: per (scenario, traffic class), three nanosecond HDR histograms, error counts and interval logs.

Each completed request has three instants (DESIGN.md, "The measurement model") and feeds three histograms:

    intended_to_done   done - intended   the headline latency, free of coordinated omission
    sent_to_done       done - sent       what a closed-loop tool would report
    send_lag           sent - intended   how far the client fell behind its schedule

The hot path, ``record()``, only appends the three raw stamps to a per-key list (~0.2 µs). ``flush()`` turns
them into differences with numpy and adds them to the histograms in bulk (``hlog.record_bulk``); a key's buffer
also flushes itself every ``FLUSH_EVERY`` requests so memory stays bounded if nobody calls ``tick()``.

Out-of-range differences never raise and are never dropped: they are **clamped** (a negative to 0, above 1 h to
1 h) and counted in ``underflow``/``overflow`` per key and metric, so the three histograms of a key always hold
the same count. Errors are counted per gRPC status name (timeouts as ``DEADLINE_EXCEEDED``) and never enter a
histogram.

Interval logs: call ``tick()`` often (e.g. from a background task every 100 ms); every ``interval_s`` it writes
each key's interval histograms to the ``.hlog`` as ``Tag=scenario/class/metric`` lines and flushes the file, so
a killed run keeps every finished interval. ``to_dict()``/``from_dict()`` carry cumulative histograms between
processes; ``merge()`` adds them losslessly.

Per-request log (opt-in, ``request_log_path``): ``record()`` then also buffers the request's size in bytes (a 4th
integer; without a log the size is dropped: buffering it anyway measured up to ~10 % of ``record``), each flush
hands the key's stamps and sizes, as the int64 array it already built, to a ``RequestLog`` sink, and
``record_error`` keeps the failure's instants and size for it. Format and measured cost:
``client/request_log.py``.
"""

from __future__ import annotations

import time
import typing
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, TypedDict

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client import hlog
from tailmark.client.request_log import RequestLog
from tailmark.client.verdict import percentile_ns

Key = tuple[str, str]  # (scenario, traffic_class)
METRICS: Final = ("intended_to_done", "sent_to_done", "send_lag")
ALL_CLASSES: Final = "all"  # the aggregate over a scenario's classes, built on demand
DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"  # the status name a timeout is counted under
FLUSH_EVERY: Final = 16_384  # requests buffered per key before record() flushes that key itself
FORMAT: Final = "tailmark.recorder/1"
_ALL_UNITS: Final = "ns"


class RecorderFormatError(ValueError):
    """A serialised recorder could not be loaded (the message names the field)."""


# --- serialised form: declared once, used to write and to validate on read ---


class SeriesDict(TypedDict):
    scenario: str
    traffic_class: str
    histograms: dict[str, str]  # metric -> base64 HDR V2 encoding (cumulative)
    errors: dict[str, int]  # gRPC status name -> count
    overflow: dict[str, int]  # metric -> values above the range, clamped to the top
    underflow: dict[str, int]  # metric -> negative values, clamped to 0


class RecorderDict(TypedDict):
    format: str
    unit: str
    series: list[SeriesDict]


@dataclass(slots=True, eq=False)
class _Series:
    """Everything recorded for one key."""

    pending: list[int] = field(default_factory=list)  # intended, sent, done[, bytes] per request
    total: dict[str, HdrHistogram] = field(default_factory=lambda: {m: hlog.new_histogram() for m in METRICS})
    interval: dict[str, HdrHistogram] = field(default_factory=lambda: {m: hlog.new_histogram() for m in METRICS})
    errors: Counter[str] = field(default_factory=Counter)
    overflow: Counter[str] = field(default_factory=Counter)
    underflow: Counter[str] = field(default_factory=Counter)
    key: Key = ("", "")
    failed: list[tuple[int | None, int | None, int, str, int]] = field(default_factory=list)  # for the request log only


class Recorder:
    """Latency histograms and error counts per ``(scenario, traffic_class)``, with optional ``.hlog`` intervals.

    Example::

        rec = Recorder(hlog_path="run.hlog")
        t0 = time.perf_counter_ns()
        rec.record(("server", "default"), intended_ns=t0, sent_ns=t0 + 2_000, done_ns=t0 + 900_000)
        rec.record_error(("server", "default"), "UNAVAILABLE")
        rec.tick()                                   # writes an interval once per interval_s
        rec.histogram(("server", "default"), "intended_to_done").get_value_at_percentile(99.0)  # 900095
        rec.close()
    """

    def __init__(
        self,
        *,
        hlog_path: str | Path | None = None,
        interval_s: float = 1.0,
        start_ns: int | None = None,
        start_time_s: float | None = None,
        request_log_path: str | Path | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s:g} requested; must be > 0")
        self._series: dict[Key, _Series] = {}
        self._retired: set[str] = set()  # scenarios that ended: no more interval lines (their totals stay)
        self._pending: dict[Key, list[int]] = {}  # the hot path's only lookup
        self._lag_p99: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)  # per scenario, per interval
        self._interval_ns = round(interval_s * 1e9)
        self._start_ns = time.perf_counter_ns() if start_ns is None else start_ns
        self._interval_start_ns = self._start_ns
        self._file: IO[str] | None = None
        self._writer: hlog.HlogWriter | None = None
        if hlog_path is not None:
            start_time_s = time.time() if start_time_s is None else start_time_s
            comment = "[tailmark interval histograms: values in ns, max column in ms, Tag=scenario/class/metric]"
            self._file, self._writer = hlog.open_log(hlog_path, start_time_s, comment)
        self._request_log = RequestLog(request_log_path, start_ns=self._start_ns) if request_log_path else None
        self._width = 3  # integers buffered per request: intended, sent, done (and the request's bytes if logged)
        if self._request_log is not None:
            self._width = 4
            self.record = self._record_sized  # type: ignore[method-assign]

    # --- hot path ---

    def record(self, key: Key, intended_ns: int, sent_ns: int, done_ns: int, request_bytes: int = 0) -> None:
        """Buffer one completed request (perf_counter_ns stamps); checked and histogrammed at the next flush.

        ``request_bytes`` is kept only with a request log (``__init__`` then binds ``_record_sized`` here)."""
        buf = self._pending.get(key)
        if buf is None:
            buf = self._add_series(key).pending
        buf += (intended_ns, sent_ns, done_ns)
        if len(buf) >= 3 * FLUSH_EVERY:
            self._flush_series(self._series[key])

    def _record_sized(self, key: Key, intended_ns: int, sent_ns: int, done_ns: int, request_bytes: int = 0) -> None:
        buf = self._pending.get(key)
        if buf is None:
            buf = self._add_series(key).pending
        buf += (intended_ns, sent_ns, done_ns, request_bytes)
        if len(buf) >= 4 * FLUSH_EVERY:
            self._flush_series(self._series[key])

    def record_error(
        self,
        key: Key,
        status_name: str,
        intended_ns: int | None = None,
        sent_ns: int | None = None,
        request_bytes: int = 0,
    ) -> None:
        """Count one failed request under its gRPC status name (a timeout: ``DEADLINE_EXCEEDED``).

        With a request log, the failure is logged with ``done_ns`` = now and the instants and size the caller
        gives."""
        series = self._series.get(key) or self._add_series(key)
        series.errors[status_name] += 1
        if self._request_log is not None:
            series.failed.append((intended_ns, sent_ns, time.perf_counter_ns(), status_name, request_bytes))

    # --- buffers to histograms ---

    def _add_series(self, key: Key) -> _Series:
        scenario, traffic_class = key
        for part in (scenario, traffic_class):
            hlog.check_tag(part)  # refuse now, not at the first interval write
        if "/" in scenario or "/" in traffic_class:
            raise ValueError(f"scenario and traffic class names may not contain '/': {key!r}")
        if traffic_class == ALL_CLASSES:
            raise ValueError(f"traffic class {ALL_CLASSES!r} is reserved for the aggregate")
        series = self._series[key] = _Series(key=key)
        self._pending[key] = series.pending
        return series

    def _flush_series(self, series: _Series) -> None:
        if series.failed and self._request_log is not None:
            self._request_log.write_errors(series.key, series.failed)
            series.failed.clear()
        if not series.pending:
            return
        stamps = np.array(series.pending, dtype=np.int64).reshape(-1, self._width)
        series.pending.clear()
        if self._request_log is not None:
            self._request_log.write_ok(series.key, stamps)
        intended, sent, done = stamps[:, 0], stamps[:, 1], stamps[:, 2]
        for metric, values in zip(METRICS, (done - intended, done - sent, sent - intended), strict=True):
            low = values < 0
            high = values > hlog.HIGHEST_NS
            if low.any() or high.any():
                series.underflow[metric] += int(np.count_nonzero(low))
                series.overflow[metric] += int(np.count_nonzero(high))
                values = np.clip(values, 0, hlog.HIGHEST_NS)
            hlog.record_bulk((series.total[metric], series.interval[metric]), values)

    def flush(self) -> None:
        """Move every buffered request into the histograms."""
        for series in self._series.values():
            self._flush_series(series)

    # --- interval logs ---

    def tick(self, now_ns: int | None = None) -> bool:
        """Write the current interval if ``interval_s`` has passed since the last one; True if it wrote."""
        now_ns = time.perf_counter_ns() if now_ns is None else now_ns
        if now_ns - self._interval_start_ns < self._interval_ns:
            return False
        self.flush_interval(now_ns)
        return True

    def flush_interval(self, now_ns: int | None = None) -> None:
        """End the current interval now: log each key's interval histograms (if logging) and start afresh."""
        now_ns = time.perf_counter_ns() if now_ns is None else now_ns
        self.flush()
        start_s = (self._interval_start_ns - self._start_ns) / 1e9
        end_s = max(start_s, (now_ns - self._start_ns) / 1e9)
        self._note_lag(now_ns)
        for (scenario, traffic_class), series in self._series.items():
            if scenario in self._retired:
                continue
            for metric in METRICS:
                histogram = series.interval[metric]
                if self._writer is not None:
                    tag = f"{scenario}/{traffic_class}/{metric}"
                    self._writer.output_interval_histogram(histogram, start_s, end_s, tag=tag)
                hlog.reset_fast(histogram)
        if self._file is not None:
            self._file.flush()  # a killed run keeps every finished interval
        if self._request_log is not None:
            self._request_log.flush()
        self._interval_start_ns = now_ns

    def retire(self, scenario: str, now_ns: int | None = None) -> None:
        """``scenario`` ended: write its last (partial) interval now, and no empty ones for it while later scenarios
        run. Requests it still records count in its totals, not in the log."""
        self.flush_interval(now_ns)
        self._retired.add(scenario)

    def _note_lag(self, now_ns: int) -> None:
        """Each scenario's send-lag p99 over the interval that just ended, if it recorded anything."""
        by_scenario: dict[str, HdrHistogram] = {}
        for (scenario, _), series in self._series.items():
            interval = series.interval["send_lag"]
            if interval.get_total_count():
                hlog.add_into(by_scenario.setdefault(scenario, hlog.new_histogram()), interval)
        for scenario, histogram in by_scenario.items():
            self._lag_p99[scenario].append((now_ns, percentile_ns(histogram, 99.0)))  # LoadGen's rank rule

    def send_lag_p99_per_interval(self, scenario: str) -> list[tuple[int, int]]:
        """(interval end, send-lag p99) in ns for each interval in which ``scenario`` recorded requests."""
        return list(self._lag_p99.get(scenario, ()))

    def close(self, now_ns: int | None = None) -> None:
        """Write the last (partial) interval and close the log; the cumulative histograms stay readable."""
        if self._file is None:
            self.flush()
        else:
            self.flush_interval(now_ns)
            self._file.close()
            self._file = self._writer = None
        if self._request_log is not None:
            self._request_log.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None):
        self.close()

    # --- reading ---

    def keys(self) -> list[Key]:
        """Every key that recorded a request or an error, in first-seen order."""
        return list(self._series)

    def histogram(self, key: Key, metric: str = "intended_to_done") -> HdrHistogram:
        """The cumulative histogram of one key and metric; ``(scenario, "all")`` merges the scenario's classes."""
        if metric not in METRICS:
            raise KeyError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        self.flush()
        scenario, traffic_class = key
        if traffic_class == ALL_CLASSES:
            merged = hlog.new_histogram()
            for (s, _), series in self._series.items():
                if s == scenario:
                    hlog.add_into(merged, series.total[metric])
            return merged
        return self._series[key].total[metric]

    def errors(self, key: Key) -> Counter[str]:
        """Error counts by status name; ``(scenario, "all")`` sums the scenario's classes."""
        return self._sum_counters(key, "errors")

    def overflow(self, key: Key) -> Counter[str]:
        """Per metric, how many values were above 1 h and clamped to it."""
        self.flush()
        return self._sum_counters(key, "overflow")

    def underflow(self, key: Key) -> Counter[str]:
        """Per metric, how many values were negative and clamped to 0 (e.g. a send slightly before its slot)."""
        self.flush()
        return self._sum_counters(key, "underflow")

    def _sum_counters(self, key: Key, name: str) -> Counter[str]:
        scenario, traffic_class = key
        total: Counter[str] = Counter()
        for (s, c), series in self._series.items():
            if s == scenario and traffic_class in (c, ALL_CLASSES):
                total.update(getattr(series, name))
        return total

    # --- merging and serialising ---

    def merge(self, other: Recorder) -> None:
        """Add another recorder's cumulative histograms and counts to this one (interval logs stay separate)."""
        other.flush()
        self.flush()
        for key, theirs in other._series.items():
            ours = self._series.get(key) or self._add_series(key)
            for metric in METRICS:
                hlog.add_into(ours.total[metric], theirs.total[metric])
            ours.errors.update(theirs.errors)
            ours.overflow.update(theirs.overflow)
            ours.underflow.update(theirs.underflow)

    def to_dict(self) -> RecorderDict:
        """A JSON-able snapshot of the cumulative state (histograms as base64 HDR V2 encodings)."""
        self.flush()
        series: list[SeriesDict] = [
            SeriesDict(
                scenario=scenario,
                traffic_class=traffic_class,
                histograms={m: s.total[m].encode().decode("ascii") for m in METRICS},
                errors=dict(s.errors),
                overflow=dict(s.overflow),
                underflow=dict(s.underflow),
            )
            for (scenario, traffic_class), s in self._series.items()
        ]
        return RecorderDict(format=FORMAT, unit=_ALL_UNITS, series=series)

    @classmethod
    def from_dict(cls, data: Any) -> Recorder:
        """A recorder (without a log) holding what ``to_dict`` wrote; refuses anything malformed."""
        _check_fields(data, RecorderDict, "recorder")
        if data["format"] != FORMAT or data["unit"] != _ALL_UNITS:
            raise RecorderFormatError(f"format {data['format']!r} in {data['unit']!r}; expected {FORMAT!r} in ns")
        recorder = cls()
        for index, item in enumerate(data["series"]):
            where = f"series[{index}]"
            _check_fields(item, SeriesDict, where)
            key = (item["scenario"], item["traffic_class"])
            try:
                series = recorder._series.get(key) or recorder._add_series(key)
            except ValueError as exc:
                raise RecorderFormatError(f"{where}: {exc}") from None
            if set(item["histograms"]) != set(METRICS):
                raise RecorderFormatError(f"{where}.histograms has {sorted(item['histograms'])}; expected {METRICS}")
            for metric, blob in item["histograms"].items():
                try:
                    decoded = hlog.decode(blob)
                except Exception as exc:
                    raise RecorderFormatError(f"{where}.histograms.{metric}: cannot decode ({exc})") from None
                hlog.add_into(series.total[metric], decoded)
            for name in ("errors", "overflow", "underflow"):
                counts = item[name]
                if not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counts.items()):
                    raise RecorderFormatError(f"{where}.{name} must map names to non-negative integers")
                getattr(series, name).update(counts)
        return recorder


def _check_fields(data: Any, schema: type, where: str) -> None:
    """Refuse a dict whose fields or top-level types differ from the TypedDict ``schema``."""
    if not isinstance(data, dict):
        raise RecorderFormatError(f"{where} must be an object, not {type(data).__name__}")
    expected = typing.get_type_hints(schema)
    if set(data) != set(expected):
        missing, extra = sorted(set(expected) - set(data)), sorted(set(data) - set(expected))
        raise RecorderFormatError(f"{where}: missing fields {missing}, unknown fields {extra}")
    for name, annotation in expected.items():
        origin = typing.get_origin(annotation) or annotation
        if not isinstance(data[name], origin):
            raise RecorderFormatError(f"{where}.{name} must be {annotation}, not {type(data[name]).__name__}")


def scenario_keys(scenarios: Iterable[str]) -> list[str]:
    """The recorder's scenario keys for a run's scenario list: the name, numbered when it repeats (server-2)."""
    seen: Counter[str] = Counter()
    keys = []
    for name in scenarios:
        seen[name] += 1
        keys.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return keys


def merged(recorders: Iterable[Recorder]) -> Recorder:
    """One recorder holding the sum of several (e.g. loaded with ``from_dict`` from each worker's result)."""
    total = Recorder()
    for recorder in recorders:
        total.merge(recorder)
    return total
