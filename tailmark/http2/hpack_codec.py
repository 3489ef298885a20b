"""HPACK for the gRPC frontend: a memoising decoder for requests and fixed encodings for responses.

Clients send the same header block for every call once their dynamic table has settled (gRPC's C core
indexes ``:path``, ``content-type`` and friends on first use), so a decoded block is cached by its bytes
and the table state it was decoded against. Responses use only literals that never touch the client's
dynamic table, so they can be built once and concatenated.
"""

from __future__ import annotations

import math
from urllib.parse import quote

import hpack

from tailmark.http2 import frames

_CACHE_LIMIT = 512  # distinct blocks per connection; beyond it the cache starts over


class HeaderListTooLarge(Exception):
    """A complete, decoded header block over the limit: only its stream fails (the HPACK state stays in sync)."""


class HeaderDecoder:
    """``decode(block)`` → {name: value} (str), memoised while the dynamic table is unchanged.

    Blocks over ``max_header_list_size`` raise HeaderListTooLarge once decoded; hpack itself stops at 16
    times that (a decompression bomb), mid-block, which leaves the connection unusable (COMPRESSION_ERROR).
    """

    def __init__(self, max_header_list_size: int = 64 * 1024) -> None:
        self.max_header_list_size = max_header_list_size
        self._decoder = hpack.Decoder(max_header_list_size=16 * max_header_list_size)
        self._generation = 0
        self._cache: dict[tuple[int, bytes], dict[str, str]] = {}

    def decode(self, block: bytes) -> dict[str, str]:
        key = (self._generation, block)
        headers = self._cache.get(key)
        if headers is not None:
            return headers
        header_table = self._decoder.header_table
        table = header_table.dynamic_entries
        # the newest entry itself, not its id(): held here, it cannot be freed and its address reused by an
        # entry this block adds (which made a changed table look unchanged, and stale cached blocks valid)
        length, first, maxsize = len(table), table[0] if table else None, header_table.maxsize
        headers = {}
        size = 0
        for name, value in self._decoder.decode(block):
            size += len(name) + len(value) + 32  # RFC 9113 §6.5.2
            # repeated names (only custom metadata repeats) keep the first value, as grpc does for lookups
            headers.setdefault(name, value)
        if len(table) != length or (table[0] if table else None) is not first or header_table.maxsize != maxsize:
            self._generation += 1  # the same bytes may mean something else from now on
        elif len(self._cache) < _CACHE_LIMIT and size <= self.max_header_list_size:
            self._cache[(self._generation, block)] = headers
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        if size > self.max_header_list_size:
            raise HeaderListTooLarge(f"header list of {size} bytes; the limit is {self.max_header_list_size}")
        return headers


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str, value: str) -> bytes:
    """One header as a literal without indexing, new name, no Huffman coding (RFC 7541 §6.2.2)."""
    name_bytes, value_bytes = name.encode("ascii"), value.encode("ascii")
    return b"\x00" + _integer(len(name_bytes), 7) + name_bytes + _integer(len(value_bytes), 7) + value_bytes


STATUS_200 = b"\x88"  # static table entry 8, ":status: 200"
CONTENT_TYPE = literal("content-type", "application/grpc")
RESPONSE_HEADERS = STATUS_200 + CONTENT_TYPE
OK_TRAILERS = literal("grpc-status", "0")


def trailers(status: int, message: str = "") -> bytes:
    block = literal("grpc-status", str(status))
    if message:
        # gRPC's percent-encoding: printable ASCII except '%' passes, everything else as %XX of its UTF-8
        block += literal("grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~", encoding="utf-8"))
    return block


def headers_frames(stream_id: int, block: bytes, *, end_stream: bool, max_frame: int) -> bytes:
    """A HEADERS frame (plus CONTINUATIONs when the block is larger than the peer's frame size)."""
    flags = frames.END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frames.frame(frames.HEADERS, flags | frames.END_HEADERS, stream_id, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frames.frame(frames.HEADERS, flags, stream_id, parts[0])]
    out += [frames.frame(frames.CONTINUATION, 0, stream_id, part) for part in parts[1:-1]]
    out.append(frames.frame(frames.CONTINUATION, frames.END_HEADERS, stream_id, parts[-1]))
    return b"".join(out)


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def timeout_seconds(value: str | None) -> float | None:
    """The ``grpc-timeout`` header ("100m", "5S", ...) in seconds; None when absent or malformed."""
    if not value or len(value) > 9 or value[-1] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


def timeout_value(seconds: float) -> str:
    """``seconds`` as a ``grpc-timeout`` value: at most 8 digits, in the finest unit that fits (rounded up)."""
    for unit, scale in (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600)):
        amount = math.ceil(seconds * scale)
        if amount < 100_000_000:
            return f"{max(amount, 1)}{unit}"
    return "99999999H"
