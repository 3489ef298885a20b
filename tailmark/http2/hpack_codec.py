"""HPACK for tailmark's HTTP/2: a memoising, limit-checking decoder, and literal encodings for fixed blocks.

Clients send the same header block for every call once their dynamic table has settled (gRPC's C core
indexes ``:path``, ``content-type`` and friends on first use), so a decoded block is cached by its bytes
and the table state it was decoded against. Responses use only literals that never touch the client's
dynamic table, so they can be built once and concatenated.
"""

from __future__ import annotations

import hpack

from tailmark.http2 import frames

_CACHE_LIMIT = 512  # distinct blocks per connection; beyond it the cache starts over


class HeaderListTooLarge(Exception):
    """A complete, decoded header block over the limit: only its stream fails (the HPACK state stays in sync)."""


class HeaderBlockRefused(Exception):
    """A block refused before or while decoding (too many fields or table-size updates, or past the hard size
    limit): the dynamic table may be out of step with the peer's, so the connection cannot go on.
    ``limit`` names the limit, ``compression`` says the RFC answer is COMPRESSION_ERROR."""

    def __init__(self, limit: str, message: str, *, compression: bool = False) -> None:
        super().__init__(message)
        self.limit = limit
        self.compression = compression


class HeaderDecoder:
    """``decode(block)`` → {name: value} (str), memoised while the dynamic table is unchanged.

    Blocks over ``max_header_list_size`` raise HeaderListTooLarge once decoded; hpack itself stops at
    ``hard_limit`` (default 16 times that: a decompression bomb), mid-block, which leaves the connection
    unusable (COMPRESSION_ERROR). With ``max_fields`` / ``max_size_updates`` a block is first scanned without
    decoding (``scan_block``): more fields, or more table-size updates, than that raise HeaderBlockRefused
    before any work proportional to the block is done.
    """

    def __init__(
        self,
        max_header_list_size: int = 64 * 1024,
        *,
        hard_limit: int | None = None,
        max_fields: int | None = None,
        max_size_updates: int | None = None,
    ) -> None:
        self.max_header_list_size = max_header_list_size
        self.hard_limit = hard_limit or 16 * max_header_list_size
        self.max_fields = max_fields
        self.max_size_updates = max_size_updates
        self._decoder = hpack.Decoder(max_header_list_size=self.hard_limit)
        # decoded blocks by their bytes, valid for the dynamic table as it is now (emptied when it changes);
        # the connection looks blocks up here itself before it calls decode
        self.cache: dict[bytes, dict[str, str]] = {}

    def decode(self, block: bytes) -> dict[str, str]:
        headers = self.cache.get(block)
        if headers is not None:
            return headers
        header_table = self._decoder.header_table
        table = header_table.dynamic_entries
        # the newest entry itself, not its id(): held here, it cannot be freed and its address reused by an
        # entry this block adds (which made a changed table look unchanged, and stale cached blocks valid)
        length, first, maxsize = len(table), table[0] if table else None, header_table.maxsize
        if self.max_fields is not None:
            scan_block(block, self.max_fields, self.max_size_updates)
        try:
            decoded = self._decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as exc:
            raise HeaderBlockRefused("header_list", f"header block past {self.hard_limit} bytes: {exc}") from None
        headers = {}
        size = 0
        for raw_name, raw_value in decoded:
            size += len(raw_name) + len(raw_value) + 32  # RFC 9113 §6.5.2
            # never an exception for bytes that are not UTF-8 (the table is already updated): they stay
            # recognisable as surrogates, and the call that carries them fails on its own
            name, value = raw_name.decode("utf-8", "surrogateescape"), raw_value.decode("utf-8", "surrogateescape")
            # repeated names (only custom metadata repeats) keep the first value, as grpc does for lookups
            headers.setdefault(name, value)
        cache = self.cache
        if len(table) != length or (table[0] if table else None) is not first or header_table.maxsize != maxsize:
            cache.clear()  # the same bytes may mean something else from now on
        elif size <= self.max_header_list_size:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[block] = headers
        if size > self.max_header_list_size:
            raise HeaderListTooLarge(f"header list of {size} bytes; the limit is {self.max_header_list_size}")
        return headers


def _read_integer(block: bytes, offset: int, prefix_bits: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 §5.1) at ``offset``: (value, offset after it); a truncated one ends the block."""
    limit = (1 << prefix_bits) - 1
    value = block[offset] & limit
    offset += 1
    if value < limit:
        return value, offset
    shift = 0
    size = len(block)
    while offset < size:
        byte = block[offset]
        offset += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift > 28:
            break  # hpack refuses it as malformed when it decodes
    return value, size


def scan_block(block: bytes, max_fields: int, max_size_updates: int | None) -> None:
    """Count a header block's fields and table-size updates without decoding it (strings are skipped by their
    length), and raise HeaderBlockRefused past a limit: 20,000 one-byte fields or a million table-size updates
    cost a short loop here instead of a full decode."""
    offset, size, fields, updates = 0, len(block), 0, 0
    while offset < size:
        first = block[offset]
        if first & 0x80:  # indexed field
            _, offset = _read_integer(block, offset, 7)
        elif first & 0x20 and not first & 0x40:  # dynamic table size update (001xxxxx)
            _, offset = _read_integer(block, offset, 5)
            updates += 1
            if max_size_updates is not None and updates > max_size_updates:
                message = f"more than {max_size_updates} table-size updates in one header block"
                raise HeaderBlockRefused("table_size_updates", message, compression=True)
            continue
        else:  # a literal: indexed name (or a literal one), then the value
            index, offset = _read_integer(block, offset, 6 if first & 0x40 else 4)
            for _ in range(1 if index else 2):
                if offset >= size:
                    return
                length, offset = _read_integer(block, offset, 7)
                offset += length
        fields += 1
        if fields > max_fields:
            raise HeaderBlockRefused("header_fields", f"more than {max_fields} fields in one header block")


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
