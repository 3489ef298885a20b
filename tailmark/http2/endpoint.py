"""What both ends of an HTTP/2 connection do alike, as an ``asyncio.Protocol`` base class.

Frames are parsed straight out of the receive buffer; SETTINGS, PING, WINDOW_UPDATE and header-block
assembly (HEADERS + CONTINUATION) are handled here; DATA, complete header blocks, RST_STREAM and GOAWAY
go to the subclass (client/h2_transport.py; the server runs on the sans-IO connection.py instead).
Everything written while one batch of received bytes is handled goes out in a single ``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging

import hpack

from tailmark.http2 import frames
from tailmark.http2.hpack_codec import HeaderBlockRefused, HeaderDecoder, HeaderListTooLarge, headers_frames

log = logging.getLogger(__name__)

STREAM_WINDOW = 4 << 20  # what the peer may send on one stream before we acknowledge it
CONNECTION_WINDOW = 16 << 20
RECEIVE_MAX_FRAME = 1 << 20  # larger DATA frames: fewer of them for big tensors
MAX_HEADER_LIST = 64 << 10  # advertised (SETTINGS_MAX_HEADER_LIST_SIZE); a larger block fails only its stream


class ProtocolViolation(Exception):
    """A connection-level error: answered with GOAWAY and the connection closed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stream:
    """The sending half of a stream: flow-control window and what waits for it."""

    __slots__ = ("closed", "end_block", "end_with_data", "id", "outbox", "outbox_sent", "received", "send_window")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.outbox = bytearray()  # DATA payload waiting for window, from outbox_sent on
        self.outbox_sent = 0  # an offset, not deletion from the front: that memmoves the rest for every frame
        self.end_block: bytes | None = None  # trailers: sent (END_STREAM) once the outbox is empty
        self.end_with_data = False  # or: END_STREAM on the last DATA frame (a client's request)
        self.closed = False
        self.received = 0  # bytes taken since the last stream WINDOW_UPDATE

    def queue_message(self, message: bytes) -> None:
        """Append one gRPC message (uncompressed flag, 4-byte length, bytes) to the outbox, copying it once."""
        self.outbox += len(message).to_bytes(5, "big")  # the flag byte is the length's leading zero
        self.outbox += message


class Endpoint(asyncio.Protocol):
    expects_preface = False  # the server side reads the client's connection preface first

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self._buffer = bytearray()
        self._preface_seen = not self.expects_preface
        self._decoder = HeaderDecoder(MAX_HEADER_LIST)
        self._continuation: tuple[int, int, bytearray] | None = None  # stream, HEADERS flags, block so far
        self.peer_window = frames.DEFAULT_WINDOW  # initial send window of each new stream
        self.peer_max_frame = frames.DEFAULT_MAX_FRAME
        self.peer_max_streams = 2**31 - 1
        self._send_window = frames.DEFAULT_WINDOW  # connection-level
        self._received = 0  # bytes taken since the last connection WINDOW_UPDATE
        self._blocked: dict[int, Stream] = {}  # streams with DATA waiting for window
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = False
        self._handlers = {
            frames.DATA: self.on_data,
            frames.HEADERS: self._on_headers,
            frames.RST_STREAM: self.on_rst_stream,
            frames.SETTINGS: self._on_settings,
            frames.PING: self._on_ping,
            frames.GOAWAY: self.on_goaway,
            frames.WINDOW_UPDATE: self._on_window_update,
            frames.CONTINUATION: self._on_continuation,
        }

    # --- what subclasses implement ---

    def on_header_block(self, stream_id: int, flags: int, headers: dict[str, str], too_large: str | None) -> None:
        """A complete header block; ``too_large`` says why its stream must fail (the block was over the limit)."""
        raise NotImplementedError

    def on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def on_sent_end(self, stream: Stream) -> None:
        """Our END_STREAM for ``stream`` went out."""

    def on_peer_settings(self) -> None:
        """The peer's SETTINGS were applied (and acknowledged)."""

    # --- connection start ---

    def send_settings(self) -> None:
        own = {
            frames.ENABLE_PUSH: 0,
            frames.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            frames.MAX_FRAME_SIZE: RECEIVE_MAX_FRAME,
            frames.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        }
        self.write(frames.settings(own) + frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW))

    # --- receiving ---

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._preface_seen:
            if len(buffer) < len(frames.PREFACE):
                if not frames.PREFACE.startswith(bytes(buffer)):
                    self.abort("not an HTTP/2 client (no connection preface)")
                return
            if buffer[: len(frames.PREFACE)] != frames.PREFACE:
                self.abort("not an HTTP/2 client (no connection preface)")
                return
            del buffer[: len(frames.PREFACE)]
            self._preface_seen = True
        offset, size = 0, len(buffer)
        unpack = frames.HEADER.unpack_from
        handlers = self._handlers
        try:
            while size - offset >= 9:
                high, low, kind, flags, stream_id = unpack(buffer, offset)
                length = (high << 16) | low
                if length > RECEIVE_MAX_FRAME:
                    raise ProtocolViolation(frames.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = offset + 9 + length
                if end > size:
                    break
                payload = bytes(buffer[offset + 9 : end])
                offset = end
                if self._continuation is not None and kind != frames.CONTINUATION:
                    raise ProtocolViolation(frames.PROTOCOL_ERROR, "header block interrupted")
                handler = handlers.get(kind)
                if handler is not None:  # PRIORITY and unknown types are ignored (RFC 9113 §5.5)
                    handler(flags, stream_id & 0x7FFFFFFF, payload)
                if self.closed:
                    return
        except ProtocolViolation as exc:
            self.abort(str(exc), exc.code)
            return
        del buffer[:offset]
        self.flush()

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:  # clients open odd streams; push (even) is disabled
            raise ProtocolViolation(frames.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        try:
            block = frames.unpad(flags, payload)
        except ValueError as exc:
            raise ProtocolViolation(frames.PROTOCOL_ERROR, str(exc)) from None
        if flags & frames.END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self._continuation = (stream_id, flags, bytearray(block))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise ProtocolViolation(frames.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        _, first_flags, block = self._continuation
        block += payload
        if len(block) > 1 << 20:
            raise ProtocolViolation(frames.PROTOCOL_ERROR, "header block over 1 MiB")
        if flags & frames.END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, first_flags, bytes(block))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        too_large = None
        try:
            headers = self._decoder.decode(block)
        except HeaderListTooLarge as exc:  # decoded in full, the table in sync: only this stream fails
            headers, too_large = {}, str(exc)
        except (hpack.HPACKError, HeaderBlockRefused) as exc:
            raise ProtocolViolation(frames.COMPRESSION_ERROR, f"bad header block: {exc}") from None
        self.on_header_block(stream_id, flags, headers, too_large)

    def consumed(self, stream: Stream | None, size: int, end_stream: bool) -> None:
        """Give back flow-control window for ``size`` DATA bytes taken (padding included)."""
        self.consumed_connection(size)
        if stream is not None and not end_stream:
            self.consumed_stream(stream, size)

    def consumed_connection(self, size: int) -> None:
        self._received += size
        if self._received >= CONNECTION_WINDOW // 2:
            self.write(frames.window_update(0, self._received))
            self._received = 0

    def consumed_stream(self, stream: Stream, size: int) -> None:
        """Give the stream's window back (in halves of it: one WINDOW_UPDATE per 2 MiB)."""
        stream.received += size
        if stream.received >= STREAM_WINDOW // 2:
            self.write(frames.window_update(stream.id, stream.received))
            stream.received = 0

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & frames.ACK:
            return
        if stream_id != 0 or len(payload) % 6:
            raise ProtocolViolation(frames.FRAME_SIZE_ERROR, "malformed SETTINGS")
        for key, value in frames.parse_settings(payload):
            if key == frames.INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise ProtocolViolation(frames.FLOW_CONTROL_ERROR, "initial window too large")
                delta, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == frames.MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise ProtocolViolation(frames.PROTOCOL_ERROR, f"max frame size {value}")
                self.peer_max_frame = value
            elif key == frames.MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            # our header blocks never index, so the peer's table size does not matter
        self.write(frames.frame(frames.SETTINGS, frames.ACK, 0))
        self.on_peer_settings()
        self.unblock()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 8:
            raise ProtocolViolation(frames.FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
        if not flags & frames.ACK:
            self.write(frames.frame(frames.PING, frames.ACK, 0, payload))

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(frames.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        increment = frames.u32(payload)
        if stream_id == 0:
            self._send_window += increment
            if self._send_window > frames.MAX_WINDOW:
                raise ProtocolViolation(frames.FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
        self.unblock()

    # --- sending ---

    def send_headers(self, stream: Stream, block: bytes, *, end_stream: bool = False) -> None:
        self.write(headers_frames(stream.id, block, end_stream=end_stream, max_frame=self.peer_max_frame))

    def send_pending(self, stream: Stream) -> None:
        """Send what the flow-control windows allow; then END_STREAM (trailers, or on the last DATA)."""
        pending, offset = stream.outbox, stream.outbox_sent
        remaining = len(pending) - offset
        while remaining:
            size = min(remaining, stream.send_window, self._send_window, self.peer_max_frame)
            if size <= 0:
                stream.outbox_sent = offset
                self._blocked[stream.id] = stream
                return
            last = size == remaining and stream.end_with_data
            flags = frames.END_STREAM if last else 0
            self.write(frames.frame(frames.DATA, flags, stream.id, pending[offset : offset + size]))
            offset += size
            remaining -= size
            stream.send_window -= size
            self._send_window -= size
        pending.clear()
        stream.outbox_sent = 0
        self._blocked.pop(stream.id, None)
        if stream.end_with_data:
            self.on_sent_end(stream)
        elif stream.end_block is not None:
            self.send_headers(stream, stream.end_block, end_stream=True)
            self.on_sent_end(stream)

    def unblock(self) -> None:
        for stream in list(self._blocked.values()):
            self.send_pending(stream)
        self.flush()

    def forget_blocked(self, stream: Stream) -> None:
        self._blocked.pop(stream.id, None)

    def write(self, data: bytes) -> None:
        self._out.append(data)

    def flush(self) -> None:
        if self._out and not self.closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def flush_soon(self) -> None:
        """Flush at the end of this turn of the event loop: the answers of one batch, which complete in the
        same turn, leave in one write instead of one each."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    # --- ending ---

    def abort(self, reason: str, code: int = frames.PROTOCOL_ERROR) -> None:
        log.warning("closing HTTP/2 connection: %s", reason)
        if not self.closed and self._preface_seen:
            self.write(frames.goaway(self.last_stream_id(), code, reason.encode()[:200]))
        self.close()

    def last_stream_id(self) -> int:
        return 0

    def close(self) -> None:
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()
