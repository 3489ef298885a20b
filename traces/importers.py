"""Importers of public trace formats into ``Record`` streams (write them out with ``writer.write_trace``).

Each importer streams its file row by row (O(1) memory), except where the format forces otherwise:
Azure Functions counts are summed per minute before expansion (O(minutes)), perf_analyzer's fixed
schedule is one JSON document, and ``sort=True`` buffers everything. Rows that share a timestamp keep
one offset: they arrive together. Absolute timestamps are rebased so the first row is at offset 0.

Traffic-class names taken from a data column (burstgpt ``--class-by model|log-type``, azure-functions
``--class-by trigger``) all go through ``class_from_data``: trimmed, and every run of whitespace, ',' and '/'
replaced by one '_' ("Conversation log" -> "Conversation_log"), since results key statistics by
``scenario/class``. A value that is empty or "all" (the aggregate's name) even so is a malformed row.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import IO

import numpy as np

from tailmark.traces.format import Record, TraceFormatError, check_class, to_ns

Row = tuple[int | None, int, Record]  # (line, time in ns on the file's own clock, record)
Bad = Callable[[int | None, str], None]
MS, US, S = 1_000_000, 1_000, 1_000_000_000
_EPOCH = date(1970, 1, 1).toordinal()
_CLASS_UNSAFE = re.compile(r"[\s,/]+")
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?$")


def parse_datetime_ns(text: str) -> int:
    """``2023-11-16 18:17:03.9799600`` (up to 9 fractional digits, optional zone; none means UTC) -> ns since epoch.

    Python's ``%f`` stops at 6 digits and Azure writes 7, hence this parser.
    """
    m = _DATETIME.match(text.strip())
    if not m:
        raise ValueError(f"timestamp {text!r} is not YYYY-MM-DD HH:MM:SS[.fraction][zone]")
    day, hh, mm, ss, frac, zone = m.groups()
    try:
        days = date.fromisoformat(day).toordinal() - _EPOCH
    except ValueError as exc:
        raise ValueError(f"timestamp {text!r}: {exc}") from None
    secs = days * 86_400 + int(hh) * 3600 + int(mm) * 60 + int(ss)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return secs * S + int((frac or "").ljust(9, "0"))


def class_from_data(text: str) -> str:
    """The traffic-class name for a data value: trimmed, each run of whitespace, ',' or '/' made one '_'.

    Example::

        >>> class_from_data(" Conversation log ")
        'Conversation_log'
        >>> class_from_data("a, b/c")
        'a_b_c'

    Raises ValueError (from ``format.check_class``) when the result is empty or the reserved "all".
    """
    return check_class(_CLASS_UNSAFE.sub("_", text.strip()))


def _int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{name} {value} is negative")
    return value


class Imported:
    """An iterator of ``Record`` from one import; ``skipped``/``skipped_lines`` count rows skipped with ``skip_bad``."""

    def __init__(
        self,
        path: str | Path,
        rows: Callable[[Path, Bad], Iterator[Row]],
        *,
        sort: bool = False,
        skip_bad: bool = False,
        rebase: bool = True,
    ) -> None:
        self.path = Path(path)
        self.skip_bad = skip_bad
        self.skipped = 0
        self.skipped_lines: list[int | None] = []
        if not self.path.is_file():
            raise TraceFormatError(self.path, None, "no such file")
        self._iter = self._ordered(rows(self.path, self._bad), sort, rebase)

    def __iter__(self) -> Imported:
        return self

    def __next__(self) -> Record:
        return next(self._iter)

    def _bad(self, line: int | None, message: str) -> None:
        if not self.skip_bad:
            raise TraceFormatError(self.path, line, message)
        self.skipped += 1
        if len(self.skipped_lines) < 10:
            self.skipped_lines.append(line)

    def _ordered(self, rows: Iterator[Row], sort: bool, rebase: bool) -> Iterator[Record]:
        if sort:
            rows = iter(sorted(rows, key=lambda r: r[1]))  # stable: equal timestamps keep file order
        base: int | None = None
        prev = -(2**63)
        for line, t, rec in rows:
            if t < prev:
                raise TraceFormatError(
                    self.path,
                    line,
                    f"timestamp is {(prev - t) / MS:.3f} ms earlier than the previous row's; "
                    "sort the file or pass --sort",
                )
            prev = t
            if base is None:
                base = t if rebase else 0
            yield rec._replace(offset_ns=t - base)
        if base is None:
            extra = f" ({self.skipped} malformed rows skipped)" if self.skipped else ""
            raise TraceFormatError(self.path, None, f"no arrivals{extra}")


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) with the header checked for ``required`` columns (case-insensitive)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise TraceFormatError(path, None, "empty file")
        names = [h.strip() for h in header]
        lower = [n.lower() for n in names]
        missing = [c for c in required if c.lower() not in lower]
        if missing:
            raise TraceFormatError(path, 1, f"header lacks column(s) {', '.join(missing)}; found {', '.join(names)}")
        for values in reader:
            if not values or values == [""]:
                continue
            if len(values) != len(names):
                yield reader.line_num, {"": f"{len(values)} columns, the header has {len(names)}"}
                continue
            yield reader.line_num, dict(zip(lower, values, strict=True))


def azure_llm(path: str | Path, *, sort: bool = False, skip_bad: bool = False) -> Imported:
    """Azure LLM inference trace, 2023 or 2024 (``TIMESTAMP,ContextTokens,GeneratedTokens``)."""

    def rows(p: Path, bad: Bad) -> Iterator[Row]:
        for line, row in _csv_rows(p, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
            try:
                if "" in row:
                    raise ValueError(row[""])
                t = parse_datetime_ns(row["timestamp"])
                rec = Record(
                    0,
                    input_tokens=_int("ContextTokens", row["contexttokens"]),
                    output_tokens=_int("GeneratedTokens", row["generatedtokens"]),
                )
            except ValueError as exc:
                bad(line, str(exc))
                continue
            yield line, t, rec

    return Imported(path, rows, sort=sort, skip_bad=skip_bad)


def burstgpt(path: str | Path, *, class_by: str | None = None, sort: bool = False, skip_bad: bool = False) -> Imported:
    """BurstGPT CSV (``Timestamp`` in s, ``Model``, ``Request tokens``, ``Response tokens``, ..., ``Log Type``).

    ``class_by`` "model" or "log-type" makes that column the traffic class.
    """
    column = {None: None, "model": "model", "log-type": "log type"}
    if class_by not in column:
        raise ValueError(f"class_by={class_by!r} requested; use model or log-type")

    def rows(p: Path, bad: Bad) -> Iterator[Row]:
        for line, row in _csv_rows(p, ("Timestamp", "Request tokens", "Response tokens")):
            try:
                if "" in row:
                    raise ValueError(row[""])
                t = to_ns(row["timestamp"], S)
                rec = Record(
                    0,
                    input_tokens=_int("Request tokens", row["request tokens"]),
                    output_tokens=_int("Response tokens", row["response tokens"]),
                )
                col = column[class_by]
                if col:
                    if not row.get(col, "").strip():
                        raise ValueError(f"empty {col!r} for the traffic class")
                    rec = rec._replace(traffic_class=class_from_data(row[col]))
            except (ValueError, KeyError) as exc:
                bad(line, str(exc) if isinstance(exc, ValueError) else f"no column {exc}")
                continue
            yield line, t, rec

    return Imported(path, rows, sort=sort, skip_bad=skip_bad)


def mooncake(path: str | Path, *, sort: bool = False, skip_bad: bool = False) -> Imported:
    """Mooncake / vLLM timed-trace JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``.

    ``hash_ids`` (prefix-cache blocks) have no place in an Arrival and are dropped.
    """

    def rows(p: Path, bad: Bad) -> Iterator[Row]:
        with open(p, encoding="utf-8") as f:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text, parse_float=str)
                    if not isinstance(obj, dict) or "timestamp" not in obj:
                        raise ValueError('not a JSON object with a "timestamp"')
                    t = to_ns(obj["timestamp"], MS)
                    rec = Record(
                        0,
                        input_tokens=_int("input_length", str(obj.get("input_length", 0))),
                        output_tokens=_int("output_length", str(obj.get("output_length", 0))),
                    )
                except json.JSONDecodeError as exc:
                    bad(line, f"invalid JSON: {exc.msg}")
                    continue
                except ValueError as exc:
                    bad(line, str(exc))
                    continue
                yield line, t, rec

    return Imported(path, rows, sort=sort, skip_bad=skip_bad)


def pa_intervals(path: str | Path, *, skip_bad: bool = False) -> Imported:
    """perf_analyzer ``--request-intervals``: one gap in µs per line; request k is sent after gaps 1..k.

    The first request is at the first gap (not 0), as perf_analyzer schedules it; looping this trace with
    ``transforms.loop`` then repeats it seamlessly (its period is the sum of the gaps).
    """

    def rows(p: Path, bad: Bad) -> Iterator[Row]:
        t = 0
        with open(p, encoding="utf-8") as f:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    t += to_ns(text.strip(), US)
                except ValueError as exc:
                    bad(line, f"interval: {exc}")
                    continue
                yield line, t, Record(0)

    return Imported(path, rows, skip_bad=skip_bad, rebase=False)


def pa_schedule(path: str | Path, *, sort: bool = False, skip_bad: bool = False) -> Imported:
    """perf_analyzer ``--fixed-schedule`` input JSON: ``{"data": [{"timestamp": [ms], ...inputs}, ...]}``.

    One JSON document, so it is loaded whole; errors name the entry (``data[i]``).
    """

    def rows(p: Path, bad: Bad) -> Iterator[Row]:
        try:
            with open(p, encoding="utf-8") as f:
                doc = json.load(f, parse_float=str)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(p, exc.lineno, f"invalid JSON: {exc.msg}") from None
        entries = doc.get("data") if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise TraceFormatError(p, None, 'expected {"data": [...]} or a list of entries')
        for i, entry in enumerate(entries):
            try:
                ts = entry.get("timestamp") if isinstance(entry, dict) else None
                if isinstance(ts, list) and len(ts) == 1:
                    ts = ts[0]
                if ts is None or isinstance(ts, list):
                    raise ValueError('no "timestamp" (ms, a number or a one-element list)')
                t = to_ns(ts, MS)
            except ValueError as exc:
                bad(None, f"data[{i}]: {exc}")
                continue
            yield None, t, Record(0)

    return Imported(path, rows, sort=sort, skip_bad=skip_bad, rebase=False)


def azure_functions(
    path: str | Path,
    *,
    spread: str = "uniform",
    class_by: str | None = None,
    function: str | None = None,
    seed: int = 0,
    skip_bad: bool = False,
) -> Imported:
    """Azure Functions 2019 per-minute invocation counts (``HashOwner,HashApp,HashFunction,Trigger,1,...,1440``).

    Counts are summed over functions (or one ``function`` hash), per traffic class when ``class_by`` is
    "trigger". Minute m's n invocations are spread ``uniform`` (evenly, centred in n equal slots) or
    ``poisson`` (uniformly at random: a Poisson process given its count, seeded). Offset 0 is the start
    of minute 1, so quiet leading minutes are kept.
    """
    if spread not in ("uniform", "poisson"):
        raise ValueError(f"spread={spread!r} requested; use uniform or poisson")
    if class_by not in (None, "trigger"):
        raise ValueError(f"class_by={class_by!r} requested; use trigger")

    def rows(p: Path, bad: Bad) -> Iterator[Row]:
        with open(p, encoding="utf-8", newline="") as f:
            counts = _minute_counts(p, f, bad, class_by, function)
        if not counts:
            return
        rng = np.random.default_rng(seed)
        minutes = len(next(iter(counts.values())))
        for m in range(minutes):
            times: list[tuple[int, str]] = []
            for cls, per_minute in counts.items():
                n = int(per_minute[m])
                if n == 0:
                    continue
                offs = (np.arange(n) + 0.5) * (60.0 / n) if spread == "uniform" else np.sort(rng.uniform(0.0, 60.0, n))
                times.extend((m * 60 * S + round(o * S), cls) for o in offs.tolist())
            times.sort(key=lambda x: x[0])
            for t, cls in times:
                yield None, t, Record(0, traffic_class=cls)

    return Imported(path, rows, skip_bad=skip_bad, rebase=False)


def _minute_counts(
    path: Path, f: IO[str], bad: Bad, class_by: str | None, function: str | None
) -> dict[str, np.ndarray]:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header:
        raise TraceFormatError(path, None, "empty file")
    names = [h.strip() for h in header]
    try:
        first = names.index("1")
    except ValueError:
        raise TraceFormatError(path, 1, "header has no minute columns 1, 2, ...") from None
    if names[first:] != [str(i) for i in range(1, len(names) - first + 1)]:
        raise TraceFormatError(path, 1, "minute columns must be 1, 2, ... in order")
    lower = [n.lower() for n in names[:first]]
    for col in ("hashfunction", "trigger"):
        if col not in lower:
            raise TraceFormatError(path, 1, f"header lacks column {col}")
    i_func, i_trig = lower.index("hashfunction"), lower.index("trigger")
    counts: dict[str, np.ndarray] = {}
    for values in reader:
        if not values:
            continue
        line = reader.line_num
        if len(values) != len(names):
            bad(line, f"{len(values)} columns, the header has {len(names)}")
            continue
        if function and values[i_func] != function:
            continue
        try:
            row = np.array([_int(f"minute {i + 1} count", v) for i, v in enumerate(values[first:])], dtype=np.int64)
            cls = class_from_data(values[i_trig]) if class_by == "trigger" else "default"
        except ValueError as exc:
            bad(line, str(exc))
            continue
        if cls not in counts:
            counts[cls] = np.zeros(len(names) - first, dtype=np.int64)
        counts[cls] += row
    return counts


IMPORTERS: dict[str, Callable[..., Imported]] = {
    "azure-llm": azure_llm,
    "azure-functions": azure_functions,
    "mooncake": mooncake,
    "burstgpt": burstgpt,
    "pa-intervals": pa_intervals,
    "pa-schedule": pa_schedule,
}
