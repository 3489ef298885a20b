"""gRPC message framing (a flag byte, a 4-byte length, the message) and decompression against a size limit.

``MessageReader`` takes a stream's DATA as it arrives and returns complete messages; a compressed one is
inflated a megabyte at a time and refused as soon as it passes the limit, so a gzip bomb costs at most the
limit in memory, never what it would inflate to.
"""

from __future__ import annotations

import zlib

from tailmark.grpc_wire.status import Status

PREFIX_BYTES = 5
_INFLATE_STEP = 1 << 20
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "identity": None}


class MessageError(Exception):
    """The call's input cannot be taken: the call fails with ``status``; the connection goes on."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


def prefix(length: int, compressed: bool = False) -> bytes:
    return (length | (0x100000000 if compressed else 0)).to_bytes(PREFIX_BYTES, "big")


def encoding_wbits(encoding: str | None) -> int | None:
    """zlib's wbits for a ``grpc-encoding`` (None: identity); MessageError UNIMPLEMENTED for others."""
    try:
        return _WBITS[encoding or "identity"]
    except KeyError:
        raise MessageError(Status.UNIMPLEMENTED, f"unsupported grpc-encoding {encoding!r}") from None


def inflate(data: bytes, wbits: int, limit: int) -> bytearray:
    """``data`` decompressed, at most ``limit`` bytes of it (RESOURCE_EXHAUSTED past that, INTERNAL if broken)."""
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    try:
        while True:
            out += inflater.decompress(pending, min(_INFLATE_STEP, limit + 1 - len(out)))
            if len(out) > limit:
                raise MessageError(Status.RESOURCE_EXHAUSTED, f"decompressed message larger than {limit} bytes")
            pending = inflater.unconsumed_tail
            if not pending or inflater.eof:
                break
    except zlib.error as exc:
        raise MessageError(Status.INTERNAL, f"cannot decompress the message: {exc}") from None
    if not inflater.eof:
        raise MessageError(Status.INTERNAL, "cannot decompress the message: truncated")
    return out  # not copied into bytes: protobuf parses a bytearray as it is


class MessageReader:
    """Complete messages out of a stream's DATA. ``max_bytes`` bounds each message as sent and as inflated;
    ``max_inflated_bytes`` (when lower) bounds only what a compressed one may inflate to."""

    __slots__ = ("_body", "limit", "max_inflated", "wbits")

    def __init__(self, max_bytes: int, wbits: int | None = None, max_inflated_bytes: int | None = None) -> None:
        self.limit = max_bytes
        self.max_inflated = min(max_bytes, max_inflated_bytes or max_bytes)
        self.wbits = wbits
        self._body = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._body)

    def feed(self, data: bytes) -> list[bytes]:
        """Add DATA; the messages it completed (MessageError when one breaks a rule)."""
        body = self._body
        if not body and len(data) >= PREFIX_BYTES:  # the usual case: one whole message in one DATA frame
            length = int.from_bytes(data[1:5], "big")
            if len(data) == PREFIX_BYTES + length and length <= self.limit:
                return [self._message(data[0], data[PREFIX_BYTES:])]
        body += data
        messages = []
        while len(body) >= PREFIX_BYTES:
            length = int.from_bytes(body[1:5], "big")
            if length > self.limit:
                raise MessageError(Status.RESOURCE_EXHAUSTED, f"request message larger than {self.limit} bytes")
            if len(body) < PREFIX_BYTES + length:
                break
            messages.append(self._message(body[0], bytes(body[PREFIX_BYTES : PREFIX_BYTES + length])))
            del body[: PREFIX_BYTES + length]
        return messages

    def finish(self) -> None:
        """The stream ended: a message cut short is an error, not a request to drop silently."""
        if self._body:
            raise MessageError(Status.INTERNAL, "the request stream ended inside a message")

    def _message(self, flag: int, data: bytes) -> bytes | bytearray:
        if not flag:
            return data
        if self.wbits is None:
            raise MessageError(Status.INTERNAL, "compressed message without grpc-encoding")
        return inflate(data, self.wbits, self.max_inflated)
