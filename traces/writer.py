"""Writer of tailmark traces: streams rows to a temp file and renames it into place at the end.

Fields at their default value are left out, so a plain Poisson trace is one short line per arrival.
A ``.csv`` suffix writes the CSV variant, anything else JSONL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from tailmark.traces.arrival import DEFAULT_CLASS, Arrival
from tailmark.traces.format import FIELDS, Record, check_class, csv_columns, format_offset, header_dict, unit_ns


def _fields(rec: Arrival | Record, scale: int) -> dict[str, object]:
    """JSONL fields of one row, defaults omitted; offsets as exact decimal numbers."""
    row: dict[str, object] = {"t": format_offset(rec.offset_ns, scale)}
    if rec.traffic_class != DEFAULT_CLASS:
        row["class"] = rec.traffic_class
    if rec.batch_size != 1:
        row["batch"] = rec.batch_size
    if rec.sample_id != -1:
        row["sample"] = rec.sample_id
    if rec.payload_size:
        row["payload"] = rec.payload_size
    in_tokens = getattr(rec, "input_tokens", 0)  # an Arrival carries no tokens
    out_tokens = getattr(rec, "output_tokens", 0)
    if in_tokens:
        row["input_tokens"] = in_tokens
    if out_tokens:
        row["output_tokens"] = out_tokens
    if rec.deadline_ns:
        row["deadline"] = format_offset(rec.deadline_ns, scale)
    return row


def _json_line(row: dict[str, object]) -> str:
    # offsets are decimal text; written bare they are JSON numbers with no float rounding
    parts = []
    for key, value in row.items():
        text = value if key in ("t", "deadline") else json.dumps(value)
        parts.append(f'"{key}":{text}')
    return "{" + ",".join(parts) + "}\n"


def write_trace(
    path: str | Path,
    records: Iterable[Arrival | Record],
    *,
    time_unit: str = "ms",
    metadata: Mapping[str, object] | None = None,
    fmt: str | None = None,
) -> int:
    """Write ``records`` (sorted by offset) to ``path`` atomically; returns the number of rows.

    ``metadata`` goes into the JSONL header (or ``# key: value`` comment lines in CSV), e.g. source and
    license. ``fmt`` is "jsonl" or "csv"; by default the suffix decides. Unsorted input, or a traffic class the
    reader would refuse (``format.check_class``), raises ValueError naming the row, and nothing is written.
    """
    path = Path(path)
    scale = unit_ns(time_unit)
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"format {fmt!r} unknown; use jsonl or csv")
    meta = dict(metadata or {})
    # a plain "x" open (not mkstemp) so the file gets the usual umask permissions, not 0600
    tmp_name = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    count = 0
    try:
        with open(tmp_name, "x", encoding="utf-8", newline="") as out:
            if fmt == "jsonl":
                out.write(json.dumps(header_dict(time_unit, **meta)) + "\n")
                write_row = lambda row: out.write(_json_line(row))  # noqa: E731
            else:
                for key, value in meta.items():
                    out.write(f"# {key}: {value}\n")
                columns = csv_columns(time_unit)
                out.write(",".join(columns[k] for k in FIELDS) + "\n")
                buf = io.StringIO()
                writer = csv.writer(buf, lineterminator="\n")

                def write_row(row: dict[str, object]) -> None:
                    writer.writerow([row.get(k, "") for k in FIELDS])
                    out.write(buf.getvalue())
                    buf.seek(0)
                    buf.truncate()

            prev = 0
            classes = {DEFAULT_CLASS}  # names already checked: one set lookup per row
            for rec in records:
                if rec.offset_ns < prev:
                    raise ValueError(f"row {count + 1}: offset {rec.offset_ns} ns is before the previous {prev} ns")
                prev = rec.offset_ns
                if rec.traffic_class not in classes:
                    try:
                        classes.add(check_class(rec.traffic_class))
                    except ValueError as exc:
                        raise ValueError(f"row {count + 1}: {exc}") from None
                write_row(_fields(rec, scale))
                count += 1
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise
    return count
