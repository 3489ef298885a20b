"""gRPC metadata on the wire: the fixed response header blocks, trailers, and ``grpc-timeout``.

Response blocks use only HPACK literals that never touch the peer's dynamic table, so they are built once
and concatenated.
"""

from __future__ import annotations

import math
from urllib.parse import quote

from tailmark.grpc_wire.status import Status
from tailmark.http2.hpack_codec import literal

STATUS_200 = b"\x88"  # static table entry 8, ":status: 200"
CONTENT_TYPE = literal("content-type", "application/grpc")
RESPONSE_HEADERS = STATUS_200 + CONTENT_TYPE
OK_TRAILERS = literal("grpc-status", "0")

# gRPC's percent-encoding of grpc-message: printable ASCII except '%' passes, the rest as %XX of its UTF-8
_MESSAGE_SAFE = " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"


def trailers(status: int, message: str = "") -> bytes:
    block = literal("grpc-status", str(int(status)))
    if message:
        block += literal("grpc-message", quote(message, safe=_MESSAGE_SAFE, encoding="utf-8", errors="replace"))
    return block


class BadMetadata(Exception):
    """A metadata value the call cannot run with: that call fails with ``status``; the connection goes on."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str | None) -> float | None:
    """The ``grpc-timeout`` header ("100m", "5S", ...) in seconds, None when absent; BadMetadata
    (INVALID_ARGUMENT) when malformed: at most 8 ASCII digits and one unit letter (PROTOCOL-HTTP2.md)."""
    if value is None:
        return None
    digits = value[:-1]
    if not (1 <= len(digits) <= 8 and value.isascii() and digits.isdigit() and value[-1:] in _TIMEOUT_UNITS):
        shown = value.encode("utf-8", "surrogateescape")[:40]
        raise BadMetadata(Status.INVALID_ARGUMENT, f"malformed grpc-timeout {shown!r}")
    return int(digits) * _TIMEOUT_UNITS[value[-1]]


def timeout_value(seconds: float) -> str:
    """``seconds`` as a ``grpc-timeout`` value: at most 8 digits, in the finest unit that fits (rounded up)."""
    for unit, scale in (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600)):
        amount = math.ceil(seconds * scale)
        if amount < 100_000_000:
            return f"{max(amount, 1)}{unit}"
    return "99999999H"
