"""Streaming reader of tailmark traces (JSONL or CSV, see FORMAT.md).

The reader holds one row at a time, so a trace larger than memory replays in O(1) memory; only
``sort=True`` buffers the whole trace (it has to). Errors name the file and line.

Example::

    for arrival in read_arrivals("traces/samples/poisson_50qps_60s.jsonl", speed=2.0):
        ...  # arrival.offset_ns is already divided by the speed
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tailmark.traces.arrival import Arrival
from tailmark.traces.format import (
    FIELDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    PAYLOAD_RULES,
    Record,
    TraceFormatError,
    check_keys,
    format_offset,
    make_record,
    unit_ns,
)

log = logging.getLogger(__name__)

MAX_REPORTED_LINES = 10  # skipped line numbers kept for the message; the count is always exact


class TraceReader:
    """An iterator of ``Record`` over one trace file; the header is read (and checked) at construction.

    After iteration, ``count`` is the number of rows yielded and ``skipped`` the number of malformed
    rows skipped (only with ``skip_bad=True``; ``skipped_lines`` holds the first few line numbers).
    """

    def __init__(self, path: str | Path, *, sort: bool = False, skip_bad: bool = False) -> None:
        self.path = Path(path)
        self.skip_bad = skip_bad
        self.count = 0
        self.skipped = 0
        self.skipped_lines: list[int] = []
        try:
            self._file: IO[str] = open(self.path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by _rows
        except OSError as exc:
            raise TraceFormatError(self.path, None, f"cannot open: {exc.strerror}") from None
        self.comments: list[str] = []
        self._line = 0
        try:
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise
        self.time_unit: str = self.header["time_unit"]
        self._scale = unit_ns(self.time_unit)
        self._iter = self._sorted() if sort else self._checked()

    def __iter__(self) -> TraceReader:
        return self

    def __next__(self) -> Record:
        return next(self._iter)

    def close(self) -> None:
        """Stop reading early and release the file."""
        self._iter.close()
        self._file.close()

    # --- header -----------------------------------------------------------------------------
    def _next_line(self) -> str | None:
        while True:
            line = self._file.readline()
            if not line:
                return None
            self._line += 1
            text = line.strip()
            if text.startswith("#"):
                self.comments.append(text[1:].strip())
            elif text:
                return text

    def _read_header(self) -> dict[str, Any]:
        first = self._next_line()
        if first is None:
            raise TraceFormatError(self.path, None, "empty file: no header and no arrivals")
        if first.startswith("{"):
            self._csv_keys: list[str] | None = None
            return self._json_header(first)
        return self._csv_header(first)

    def _json_header(self, text: str) -> dict[str, Any]:
        try:
            header = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(self.path, self._line, f"header is not valid JSON: {exc.msg}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise TraceFormatError(
                self.path, self._line, f'first line must be the header {{"format": "{FORMAT_NAME}", "time_unit": ...}}'
            )
        if header.get("version") != FORMAT_VERSION:
            raise TraceFormatError(self.path, self._line, f"version {header.get('version')!r} unsupported")
        try:
            unit_ns(str(header.get("time_unit")))
        except ValueError as exc:
            raise TraceFormatError(self.path, self._line, f"header: {exc}") from None
        return header

    def _csv_header(self, text: str) -> dict[str, Any]:
        columns = next(csv.reader([text]))
        unit = next((c[2:] for c in columns if c.startswith("t_")), None)
        if unit is None:
            raise TraceFormatError(self.path, self._line, "CSV header needs a time column t_s, t_ms, t_us or t_ns")
        try:
            unit_ns(unit)
        except ValueError as exc:
            raise TraceFormatError(self.path, self._line, f"column t_{unit}: {exc}") from None
        keys = []
        for col in columns:
            if col == f"t_{unit}":
                key = "t"
            elif col.startswith("deadline_") or col in ("t", "deadline"):
                if col != f"deadline_{unit}":
                    raise TraceFormatError(self.path, self._line, f"column {col!r}: time columns must use unit {unit}")
                key = "deadline"
            else:
                key = col
            keys.append(key)
        try:
            check_keys(keys)
        except ValueError as exc:
            raise TraceFormatError(self.path, self._line, f"CSV header: {exc}") from None
        self._csv_keys = keys
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "time_unit": unit}

    # --- rows -------------------------------------------------------------------------------
    def _parse(self, text: str) -> Record:
        keys = self._csv_keys
        if keys is None:
            try:
                fields = json.loads(text, parse_float=str)  # floats stay text: offsets convert to ns exactly
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(fields, dict):
                raise ValueError("row is not a JSON object")
            check_keys(fields)
        else:
            values = next(csv.reader([text]))
            if len(values) != len(keys):
                raise ValueError(f"{len(values)} columns, the header has {len(keys)}")
            fields = {k: v for k, v in zip(keys, values, strict=True) if v != ""}
        return make_record(fields, self._scale)

    def _rows(self) -> Iterator[tuple[int, Record]]:
        """(line, record) per data row; blank and ``#`` lines are not rows."""
        line_no = self._line
        try:
            for raw in self._file:
                line_no += 1
                text = raw.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    rec = self._parse(text)
                except ValueError as exc:
                    if not self.skip_bad:
                        raise TraceFormatError(self.path, line_no, str(exc)) from None
                    self.skipped += 1
                    if len(self.skipped_lines) < MAX_REPORTED_LINES:
                        self.skipped_lines.append(line_no)
                    continue
                yield line_no, rec
        finally:
            self._file.close()
        if self.skipped:
            lines = ", ".join(map(str, self.skipped_lines))
            log.warning("%s: skipped %d malformed rows (first at lines %s)", self.path, self.skipped, lines)

    def _finish(self) -> None:
        if self.count == 0:
            extra = f" ({self.skipped} malformed rows skipped)" if self.skipped else ""
            raise TraceFormatError(self.path, None, f"trace has no arrivals{extra}")

    def _checked(self) -> Iterator[Record]:
        prev = 0
        for line_no, rec in self._rows():
            if rec.offset_ns < prev:
                unit = self.time_unit
                raise TraceFormatError(
                    self.path,
                    line_no,
                    f"offset {format_offset(rec.offset_ns, self._scale)} {unit} is earlier than the previous row's "
                    f"{format_offset(prev, self._scale)} {unit}; sort the trace or pass --sort",
                )
            prev = rec.offset_ns
            self.count += 1
            yield rec
        self._finish()

    def _sorted(self) -> Iterator[Record]:
        rows = [rec for _, rec in self._rows()]  # sorting needs them all: O(n) memory by necessity
        rows.sort(key=lambda r: r.offset_ns)  # stable: rows that share a time keep file order
        for rec in rows:
            self.count += 1
            yield rec
        self._finish()


class ArrivalReader:
    """``TraceReader`` mapped to ``Arrival`` with the speed applied; exposes the reader's counters."""

    def __init__(self, reader: TraceReader, speed: float, payload_from: str) -> None:
        self.reader = reader
        self._speed = speed
        self._payload_from = payload_from

    def __iter__(self) -> ArrivalReader:
        return self

    def __next__(self) -> Arrival:
        rec = next(self.reader)
        arrival = rec.to_arrival(self._payload_from)
        if self._speed != 1.0:
            arrival = arrival._replace(offset_ns=round(rec.offset_ns / self._speed))
        return arrival

    @property
    def skipped(self) -> int:
        return self.reader.skipped

    @property
    def header(self) -> dict[str, Any]:
        return self.reader.header

    def close(self) -> None:
        self.reader.close()


def read_records(path: str | Path, *, sort: bool = False, skip_bad: bool = False) -> TraceReader:
    """Rows of a trace as ``Record`` (token counts kept), lazily; raises ``TraceFormatError``."""
    return TraceReader(path, sort=sort, skip_bad=skip_bad)


def read_arrivals(
    path: str | Path,
    *,
    speed: float = 1.0,
    sort: bool = False,
    skip_bad: bool = False,
    payload_from: str = "input",
) -> ArrivalReader:
    """Arrivals of a trace, lazily, offsets divided by ``speed``; ``payload_from`` is the token rule.

    The header is checked before this returns; row errors raise ``TraceFormatError`` (``FILE:LINE: ...``)
    while iterating. Deadlines are budgets and are not scaled by ``speed``.
    """
    if not speed > 0:
        raise ValueError(f"speed={speed} requested; must be > 0")
    if payload_from not in PAYLOAD_RULES:
        raise ValueError(f"payload_from={payload_from!r} requested; must be one of {', '.join(PAYLOAD_RULES)}")
    return ArrivalReader(TraceReader(path, sort=sort, skip_bad=skip_bad), speed, payload_from)


__all__ = ["FIELDS", "ArrivalReader", "TraceReader", "read_arrivals", "read_records"]
