"""What a shard can learn about its clock before a common start: the kernel's sync state and an HTTP Date offset.

Shards on different hosts start at one absolute instant, so their clocks must agree (chrony/NTP or PTP); a shard
cannot fix its clock, but it can record evidence about it:

- **The kernel's own view** (``adjtimex(2)`` with no changes, allowed unprivileged and inside containers): whether
  an NTP/PTP daemon has marked the clock synchronised, and its estimated and maximum error.
- **An offset against the target's clock**, where the protocol carries one: HTTP's ``Date`` header (whole seconds).
  The KServe-v2 gRPC protocol carries no server time, so a gRPC target has nothing to compare with; an HTTP
  address of the same host does (Triton's or tailmark's metrics port, a REST port). A single ``Date`` only bounds
  the offset to a second, so the check asks repeatedly for up to ~1.2 s, about every 10 ms: each answer says the
  server's clock read ``D <= t < D + 1`` at some local instant between the request's send ``s`` and its answer
  ``r``, i.e. ``offset in (D - r, D + 1 - s)``; intersecting all of them narrows the interval to about one poll
  spacing plus one round trip once a second boundary falls between two answers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import email.utils
import http.client
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

POLL_S = 0.01
BUDGET_S = 1.2
GOOD_ENOUGH_S = 0.005  # stop polling once the offset is known to +-5 ms


@dataclass(frozen=True, slots=True)
class DateOffset:
    """Target clock minus this clock, in seconds, known to +- ``uncertainty_s``."""

    offset_s: float
    uncertainty_s: float
    answers: int

    def to_dict(self) -> dict[str, Any]:
        return {"offset_s": round(self.offset_s, 6), "uncertainty_s": round(self.uncertainty_s, 6),
                "answers": self.answers}  # fmt: skip


def offset_bounds(samples: list[tuple[float, float, float]]) -> tuple[float, float]:
    """The offset interval ``(lo, hi)`` that (send, answer, Date seconds) samples allow; lo > hi: inconsistent."""
    lo = max(date - answered for sent, answered, date in samples)
    hi = min(date + 1.0 - sent for sent, answered, date in samples)
    return lo, hi


def date_offset(url: str, *, tls: ssl.SSLContext | None = None, timeout_s: float = 2.0) -> DateOffset | str:
    """Poll ``url`` (GET) and bound the offset of its ``Date`` clock; a string says why it could not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout_s, context=tls or ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    samples: list[tuple[float, float, float]] = []
    deadline = time.time() + BUDGET_S
    try:
        while time.time() < deadline:
            sent = time.time()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            answered = time.time()
            header = response.getheader("Date")
            if header is None:
                return f"{url} sent no Date header"
            parsed = email.utils.parsedate_to_datetime(header)
            samples.append((sent, answered, parsed.timestamp()))
            lo, hi = offset_bounds(samples)
            if hi - lo <= 2 * GOOD_ENOUGH_S:
                break
            time.sleep(POLL_S)
    except (OSError, http.client.HTTPException, ValueError, TypeError) as exc:
        if not samples:
            return f"{url}: {exc or type(exc).__name__}"
    finally:
        conn.close()
    lo, hi = offset_bounds(samples)
    if lo > hi:  # answers that no single offset explains: the server's clock moved while we asked
        return f"{url}: its Date answers disagree with each other (the server's clock stepped?)"
    return DateOffset(offset_s=(lo + hi) / 2, uncertainty_s=(hi - lo) / 2, answers=len(samples))


class _Timex(ctypes.Structure):
    # struct timex (Linux, 64-bit longs): only the leading fields are read; the tail is padding
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_byte * 256),
    ]


TIME_ERROR = 5  # adjtimex's return value when the clock is not synchronised


def kernel_sync() -> dict[str, Any] | None:
    """The kernel's clock discipline state (Linux ``adjtimex``, read only); None where it cannot be read."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError, TypeError):
        return None
    if state < 0:
        return None
    return {
        "synchronised": state != TIME_ERROR,
        "est_error_s": timex.esterror / 1e6,  # microseconds in the kernel
        "max_error_s": timex.maxerror / 1e6,
    }


def clock_record(url: str | None, tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """The shard's clock evidence for results.json: the kernel's view and, with a URL, the Date offset."""
    record: dict[str, Any] = {"kernel": kernel_sync(), "date_source": url, "date_offset": None, "note": None}
    if url is None:
        record["note"] = "no HTTP address to compare clocks with (gRPC carries no server time): pass --clock-url"
        return record
    measured = date_offset(url, tls=tls)
    if isinstance(measured, str):
        record["note"] = measured
    else:
        record["date_offset"] = measured.to_dict()
    return record
