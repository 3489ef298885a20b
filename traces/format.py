"""The tailmark trace format: units, the per-row record, and parsing of one row (see FORMAT.md).

Offsets are converted to integer nanoseconds from their decimal text, never through a float, so a
trace written and read back keeps every nanosecond.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from tailmark.traces.arrival import DEFAULT_CLASS, Arrival

FORMAT_NAME = "tailmark-trace"
FORMAT_VERSION = 1

# nanoseconds per unit; the header of every trace names one of these
UNITS: dict[str, int] = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}

# JSONL row keys -> CSV column names (the time columns carry the unit: t_ms, deadline_ms)
FIELDS = ("t", "class", "batch", "sample", "payload", "input_tokens", "output_tokens", "deadline")

PAYLOAD_RULES = ("input", "total")

RESERVED_CLASS = "all"  # results show the aggregate over a scenario's classes under this name

_DECIMAL = re.compile(r"^[+]?(\d+)(?:\.(\d*))?$")


class TraceFormatError(ValueError):
    """A trace or imported file is malformed; ``str()`` is ``FILE:LINE: what is wrong``."""

    def __init__(self, path: object, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")


class Record(NamedTuple):
    """One row of a trace: an ``Arrival`` plus the token counts LLM traces carry (0: absent)."""

    offset_ns: int
    traffic_class: str = DEFAULT_CLASS
    batch_size: int = 1
    sample_id: int = -1
    payload_size: int = 0
    deadline_ns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def to_arrival(self, payload_from: str = "input") -> Arrival:
        """The arrival to replay; token counts become ``payload_size`` by the rule in FORMAT.md."""
        return Arrival(
            self.offset_ns,
            self.traffic_class,
            self.batch_size,
            self.sample_id,
            payload_for(self, payload_from),
            self.deadline_ns,
            self.output_tokens,
        )


def payload_for(rec: Record, payload_from: str = "input") -> int:
    """An explicit payload wins; else input tokens ("input") or input + output tokens ("total")."""
    if rec.payload_size:
        return rec.payload_size
    if payload_from == "total":
        return rec.input_tokens + rec.output_tokens
    return rec.input_tokens


def unit_ns(unit: str) -> int:
    """Nanoseconds per ``unit``; raises ValueError naming the accepted units."""
    try:
        return UNITS[unit]
    except KeyError:
        raise ValueError(f"time unit {unit!r} unknown; use one of {', '.join(UNITS)}") from None


def to_ns(value: object, scale_ns: int) -> int:
    """Exact conversion of a non-negative number (int, decimal text, or float) in a unit to ns."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value * scale_ns
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else None
    if text is None:
        raise ValueError(f"{value!r} is not a number")
    match = _DECIMAL.match(text.strip())
    if match:
        whole, frac = match.group(1), match.group(2) or ""
        ns = int(whole) * scale_ns
        if frac:
            # exact: frac digits scaled by scale_ns / 10**len(frac), rounded half up
            num = int(frac) * scale_ns
            den = 10 ** len(frac)
            ns += (2 * num + den) // (2 * den)
        return ns
    try:  # exponent notation, rare: Decimal keeps it exact
        dec = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not dec.is_finite() or dec < 0:
        raise ValueError(f"{text!r} is not a non-negative number")
    return int((dec * scale_ns).to_integral_value())


def format_offset(ns: int, scale_ns: int) -> str:
    """``ns`` in the unit as the shortest exact decimal text (``1500000, ms`` -> ``"1.5"``)."""
    whole, rem = divmod(ns, scale_ns)
    if not rem:
        return str(whole)
    width = len(str(scale_ns)) - 1
    return f"{whole}.{rem:0{width}d}".rstrip("0")


def _int_field(name: str, value: object, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"{name} {value!r} is not an integer") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} {value!r} is not an integer")
    if value < minimum:
        raise ValueError(f"{name} {value} is below {minimum}")
    return value


def make_record(fields: dict[str, Any], scale_ns: int) -> Record:
    """A validated record from a row's fields (JSONL keys); raises ValueError saying what is wrong."""
    if "t" not in fields:
        raise ValueError('no offset "t"')
    try:
        offset = to_ns(fields["t"], scale_ns)
    except ValueError as exc:
        raise ValueError(f"offset t: {exc}") from None
    cls = check_class(fields.get("class", DEFAULT_CLASS))
    deadline = fields.get("deadline", 0)
    try:
        deadline_ns = to_ns(deadline, scale_ns) if deadline not in (0, "") else 0
    except ValueError as exc:
        raise ValueError(f"deadline: {exc}") from None
    return Record(
        offset,
        cls,
        _int_field("batch", fields.get("batch", 1), 1),
        _int_field("sample", fields.get("sample", -1), -1),
        _int_field("payload", fields.get("payload", 0), 0),
        deadline_ns,
        _int_field("input_tokens", fields.get("input_tokens", 0), 0),
        _int_field("output_tokens", fields.get("output_tokens", 0), 0),
    )


def check_class(name: object) -> str:
    """A traffic-class name as results and interval logs can carry it (they key statistics by
    ``scenario/class`` and write it as an hlog tag): a non-empty string without '/', ',' or whitespace, and
    not "all", the name of the aggregate over classes. Raises ValueError saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"class {name!r} is not a non-empty string")
    bad = next((ch for ch in name if ch in "/," or ch.isspace()), None)
    if bad is not None:
        raise ValueError(f"class {name!r} contains {bad!r}; class names may not contain '/', ',' or whitespace")
    if name == RESERVED_CLASS:
        raise ValueError(f"class {name!r} is reserved for the aggregate over classes")
    return name


def check_keys(keys: object) -> None:
    """Unknown fields are refused (a typo must not silently drop data); ``x_`` keys are extensions."""
    for key in keys:  # type: ignore[attr-defined]
        if key not in FIELDS and not str(key).startswith("x_"):
            raise ValueError(f"unknown field {key!r} (known: {', '.join(FIELDS)}; extensions start with x_)")


def header_dict(time_unit: str, **extra: object) -> dict[str, object]:
    """The JSONL header object: format name, version, time unit, then free metadata."""
    unit_ns(time_unit)
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "time_unit": time_unit, **extra}


def csv_columns(time_unit: str) -> dict[str, str]:
    """JSONL key -> CSV column name; the time columns carry the unit suffix."""
    return {key: f"{key}_{time_unit}" if key in ("t", "deadline") else key for key in FIELDS}
