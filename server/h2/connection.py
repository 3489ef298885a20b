"""One client connection: HTTP/2 framing, flow control and gRPC calls, as an ``asyncio.Protocol``.

Only what gRPC needs: client streams carrying length-prefixed messages, responses as HEADERS + DATA +
trailers. Frames are parsed straight out of the receive buffer; everything written while one batch of
received bytes is handled goes out in a single ``transport.write``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import zlib
from collections.abc import AsyncIterator

import hpack

from tailmark.server.h2 import frames
from tailmark.server.h2.calls import Call, Route, status_code
from tailmark.server.h2.headers import (
    OK_TRAILERS,
    RESPONSE_HEADERS,
    HeaderDecoder,
    HeaderListTooLarge,
    headers_frames,
    literal,
    timeout_seconds,
    trailers,
)

log = logging.getLogger(__name__)

STREAM_WINDOW = 4 << 20  # what a client may send on one stream before we acknowledge it
CONNECTION_WINDOW = 16 << 20
RECEIVE_MAX_FRAME = 1 << 20  # larger DATA frames: fewer of them for big tensors
MAX_HEADER_LIST = 64 << 10  # advertised (SETTINGS_MAX_HEADER_LIST_SIZE); a call with more fails RESOURCE_EXHAUSTED

# gRPC status codes the transport itself answers with
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAUTHENTICATED = 16

_END = object()  # end of a stream's requests


class ProtocolViolation(Exception):
    """A connection-level protocol violation: answered with GOAWAY and the connection closed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stream:
    __slots__ = (
        "body",
        "closed",
        "headers_sent",
        "id",
        "outbox",
        "received",
        "remote_closed",
        "requests",
        "route",
        "send_window",
        "task",
        "timer",
        "trailers",
        "wbits",
    )

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.route: Route | None = None  # None: answered before its body arrived
        self.body = bytearray()
        self.requests: asyncio.Queue | None = None  # streaming calls: messages as they complete
        self.remote_closed = False
        self.closed = False
        self.send_window = send_window
        self.outbox = bytearray()  # DATA payload waiting for flow-control window
        self.trailers: bytes | None = None  # sent once the outbox is empty
        self.headers_sent = False
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.received = 0  # bytes taken since the last stream WINDOW_UPDATE
        self.wbits: int | None = None  # zlib's wbits for the call's grpc-encoding (None: identity)


class Connection(asyncio.Protocol):
    def __init__(self, server) -> None:
        self.server = server  # H2GrpcServer: routes, limits, the set of live connections
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._preface_seen = False
        self._decoder = HeaderDecoder(MAX_HEADER_LIST)
        self._streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._continuation: tuple[int, int, bytearray] | None = None  # stream, HEADERS flags, block so far
        self._peer_window = frames.DEFAULT_WINDOW  # initial send window of each new stream
        self._peer_max_frame = frames.DEFAULT_MAX_FRAME
        self._send_window = frames.DEFAULT_WINDOW  # connection-level
        self._received = 0  # bytes taken since the last connection WINDOW_UPDATE
        self._blocked: dict[int, Stream] = {}  # streams with DATA waiting for window
        self._out: list[bytes] = []
        self._flush_pending = False
        self._draining = False
        self._closed = False
        self._handlers = {
            frames.DATA: self._on_data,
            frames.HEADERS: self._on_headers,
            frames.RST_STREAM: self._on_rst_stream,
            frames.SETTINGS: self._on_settings,
            frames.PING: self._on_ping,
            frames.GOAWAY: self._on_goaway,
            frames.WINDOW_UPDATE: self._on_window_update,
            frames.CONTINUATION: self._on_continuation,
        }

    # --- asyncio.Protocol ---

    def connection_made(self, transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            log.warning("TLS client did not negotiate h2 (ALPN); closing")
            transport.close()
            self._closed = True
            return
        self.server.connections.add(self)
        own = {
            frames.ENABLE_PUSH: 0,
            frames.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            frames.MAX_FRAME_SIZE: RECEIVE_MAX_FRAME,
            frames.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        }
        self._write(frames.settings(own) + frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW))

    def connection_lost(self, exc) -> None:
        self._closed = True
        self.server.connections.discard(self)
        for stream in list(self._streams.values()):
            self._forget(stream)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._preface_seen:
            if len(buffer) < len(frames.PREFACE):
                if not frames.PREFACE.startswith(bytes(buffer)):
                    self._abort("not an HTTP/2 client (no connection preface)")
                return
            if buffer[: len(frames.PREFACE)] != frames.PREFACE:
                self._abort("not an HTTP/2 client (no connection preface)")
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
                if self._closed:
                    return
        except ProtocolViolation as exc:
            self._abort(str(exc), exc.code)
            return
        del buffer[:offset]
        self._flush()

    # --- frames ---

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
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
        block = self._continuation[2]
        block += payload
        if len(block) > 1 << 20:
            raise ProtocolViolation(frames.PROTOCOL_ERROR, "header block over 1 MiB")
        if flags & frames.END_HEADERS:
            _, first_flags, _ = self._continuation
            self._continuation = None
            self._header_block(stream_id, first_flags, bytes(block))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        too_large = None
        try:
            headers = self._decoder.decode(block)
        except HeaderListTooLarge as exc:  # decoded in full: only this stream fails, as grpc's own servers do
            headers, too_large = {}, str(exc)
        except hpack.HPACKError as exc:
            raise ProtocolViolation(frames.COMPRESSION_ERROR, f"bad header block: {exc}") from None
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client: they only end its half
            if flags & frames.END_STREAM:
                self._remote_end(stream)
            return
        if stream_id <= self._last_stream_id:
            self._write(frames.rst_stream(stream_id, frames.PROTOCOL_ERROR))
            return
        self._last_stream_id = stream_id
        if self._draining:
            self._write(frames.rst_stream(stream_id, frames.REFUSED_STREAM))
            return
        stream = self._streams[stream_id] = Stream(stream_id, self._peer_window)
        if too_large is not None:
            self._fail(stream, RESOURCE_EXHAUSTED, too_large)
        else:
            self._start(stream, headers)
        if flags & frames.END_STREAM and not stream.closed:
            self._remote_end(stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._received += len(payload)  # padding counts against flow control too
        if self._received >= CONNECTION_WINDOW // 2:
            self._write(frames.window_update(0, self._received))
            self._received = 0
        stream = self._streams.get(stream_id)
        if stream is None or stream.route is None or stream.remote_closed:
            return  # a stream we have already answered or reset: its late data is dropped
        try:
            data = frames.unpad(flags & frames.PADDED, payload)
        except ValueError as exc:
            raise ProtocolViolation(frames.PROTOCOL_ERROR, str(exc)) from None
        body = stream.body
        body += data
        if len(body) > self.server.max_message_bytes + 5:
            self._fail(stream, RESOURCE_EXHAUSTED, f"request message larger than {self.server.max_message_bytes} bytes")
            return
        if stream.requests is not None:
            self._take_messages(stream)
            if stream.closed:
                return
        end = flags & frames.END_STREAM
        if not end:
            stream.received += len(payload)
            if stream.received >= STREAM_WINDOW // 2:
                self._write(frames.window_update(stream_id, stream.received))
                stream.received = 0
        else:
            self._remote_end(stream)

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:  # the client cancelled: stop the work, send nothing more
            self._forget(stream)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & frames.ACK:
            return
        if stream_id != 0 or len(payload) % 6:
            raise ProtocolViolation(frames.FRAME_SIZE_ERROR, "malformed SETTINGS")
        for key, value in frames.parse_settings(payload):
            if key == frames.INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise ProtocolViolation(frames.FLOW_CONTROL_ERROR, "initial window too large")
                delta, self._peer_window = value - self._peer_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == frames.MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise ProtocolViolation(frames.PROTOCOL_ERROR, f"max frame size {value}")
                self._peer_max_frame = value
            # our header blocks never index, so the peer's table size does not matter
        self._write(frames.frame(frames.SETTINGS, frames.ACK, 0))
        self._unblock()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 8:
            raise ProtocolViolation(frames.FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
        if not flags & frames.ACK:
            self._write(frames.frame(frames.PING, frames.ACK, 0, payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._draining = True  # the client opens no more streams here; ours finish
        if not self._streams:
            self.close()

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(frames.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        increment = frames.u32(payload)
        if stream_id == 0:
            self._send_window += increment
            if self._send_window > frames.MAX_WINDOW:
                raise ProtocolViolation(frames.FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
        self._unblock()

    # --- calls ---

    def _start(self, stream: Stream, headers: dict[str, str]) -> None:
        """Admit a new call, or answer it at once (trailers only) when it cannot run."""
        server = self.server
        if headers.get(":method") != "POST":
            self._fail(stream, UNIMPLEMENTED, f"gRPC needs POST, not {headers.get(':method')!r}")
            return
        if not headers.get("content-type", "").startswith("application/grpc"):
            self._write(headers_frames(stream.id, literal(":status", "415"), end_stream=True, max_frame=16_384))
            self._close_stream(stream)
            return
        if server.auth_header is not None:
            given = headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, server.auth_header):
                self._fail(stream, UNAUTHENTICATED, server.auth_refusal)
                return
        path = headers.get(":path", "")
        route = server.routes.get(path)
        if route is None:
            self._fail(stream, UNIMPLEMENTED, f"unknown method {path}")
            return
        encoding = headers.get("grpc-encoding", "identity")
        if encoding == "gzip":
            stream.wbits = 16 + zlib.MAX_WBITS
        elif encoding == "deflate":
            stream.wbits = zlib.MAX_WBITS
        elif encoding != "identity":
            self._fail(stream, UNIMPLEMENTED, f"unsupported grpc-encoding {encoding!r}")
            return
        if server.max_concurrent_rpcs and server.active >= server.max_concurrent_rpcs:
            self._fail(stream, RESOURCE_EXHAUSTED, "server busy: too many concurrent RPCs")
            return
        server.active += 1
        stream.route = route
        timeout = timeout_seconds(headers.get("grpc-timeout"))
        if timeout is not None:
            stream.timer = asyncio.get_running_loop().call_later(timeout, self._deadline, stream)
        if route.streaming:
            stream.requests = asyncio.Queue()
            stream.task = asyncio.ensure_future(self._run_stream(stream, route))

    def _take_messages(self, stream: Stream) -> None:
        """Move the complete messages at the front of a streaming call's body to its request queue."""
        body = stream.body
        while len(body) >= 5:
            length = int.from_bytes(body[1:5], "big")
            if len(body) < 5 + length:
                return
            message = self._message(stream, body[0], bytes(body[5 : 5 + length]))
            del body[: 5 + length]
            if message is None:
                return
            stream.requests.put_nowait(message)

    def _message(self, stream: Stream, compressed: int, data: bytes) -> bytes | None:
        if not compressed:
            return data
        if stream.wbits is None:
            self._fail(stream, INTERNAL, "compressed message without grpc-encoding")
            return None
        limit = self.server.max_message_bytes  # applies to the message, not just its compressed form
        inflater = zlib.decompressobj(stream.wbits)
        try:
            message = inflater.decompress(data, limit + 1)
        except zlib.error as exc:
            self._fail(stream, INTERNAL, f"cannot decompress the message: {exc}")
            return None
        if len(message) > limit:
            self._fail(stream, RESOURCE_EXHAUSTED, f"decompressed request message larger than {limit} bytes")
            return None
        if not inflater.eof:
            self._fail(stream, INTERNAL, "cannot decompress the message: truncated")
            return None
        return message

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_closed = True
        route = stream.route
        if route is None or stream.closed:
            return
        if route.streaming:
            if stream.body:  # half-closed inside a message: not a request to drop silently
                self._fail(stream, INTERNAL, "the request stream ended inside a message")
                return
            stream.requests.put_nowait(_END)
            return
        body = stream.body
        if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
            self._fail(stream, INTERNAL, "a unary call needs exactly one request message")
            return
        message = self._message(stream, body[0], bytes(body[5:]))
        stream.body = bytearray()
        if message is None:
            return
        call = route.call(message)
        if isinstance(call, Call):  # finished without waiting
            self._answer(stream, call)
        else:
            stream.task = asyncio.ensure_future(self._run_unary(stream, call))

    async def _run_unary(self, stream: Stream, awaitable) -> None:
        try:
            call = await awaitable
        except asyncio.CancelledError:
            return
        self._answer(stream, call)
        self._flush()

    def _answer(self, stream: Stream, call: Call) -> None:
        if call.error is None:
            self._send(stream, call.response, OK_TRAILERS)
        else:
            self._fail(stream, *call.error)

    async def _run_stream(self, stream: Stream, route: Route) -> None:
        try:
            async for response in route.stream(self._requests(stream)):
                self._send(stream, response, None)
                self._flush()
        except asyncio.CancelledError:
            return
        except Exception as exc:  # the handler itself broke: end the call with its status
            self._fail(stream, *status_code(exc))
        else:
            self._send(stream, b"", OK_TRAILERS, framed=False)
        self._flush()

    @staticmethod
    async def _requests(stream: Stream) -> AsyncIterator[bytes]:
        while True:
            message = await stream.requests.get()
            if message is _END:
                return
            yield message

    def _deadline(self, stream: Stream) -> None:
        stream.timer = None
        if not stream.closed:
            if stream.task is not None:
                stream.task.cancel()
            self._fail(stream, DEADLINE_EXCEEDED, "deadline exceeded")
            self._flush()

    # --- sending ---

    def _send(self, stream: Stream, message: bytes, trailer_block: bytes | None, *, framed: bool = True) -> None:
        """Queue one response message (and, when given, the trailers that end the call), then flush."""
        if stream.closed:
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            self._write(headers_frames(stream.id, RESPONSE_HEADERS, end_stream=False, max_frame=self._peer_max_frame))
        if framed:
            stream.outbox += b"\x00" + len(message).to_bytes(4, "big") + message
        stream.trailers = trailer_block
        self._drain(stream)

    def _fail(self, stream: Stream, status: int, message: str) -> None:
        """End the call with a non-OK status: trailers only when nothing was sent yet."""
        if stream.closed:
            return
        block = trailers(status, message)
        if not stream.headers_sent:
            stream.headers_sent = True
            stream.outbox.clear()
            self._write(
                headers_frames(stream.id, RESPONSE_HEADERS + block, end_stream=True, max_frame=self._peer_max_frame)
            )
            self._close_stream(stream)
            return
        stream.trailers = block
        task = stream.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # no responses after the status (its next _send would also drop these trailers)
        self._drain(stream)

    def _drain(self, stream: Stream) -> None:
        """Send what the flow-control windows allow; the trailers once all DATA is out."""
        pending = stream.outbox
        while pending:
            size = min(len(pending), stream.send_window, self._send_window, self._peer_max_frame)
            if size <= 0:
                self._blocked[stream.id] = stream
                return
            self._write(frames.frame(frames.DATA, 0, stream.id, bytes(pending[:size])))
            del pending[:size]
            stream.send_window -= size
            self._send_window -= size
        self._blocked.pop(stream.id, None)
        if stream.trailers is not None:
            self._write(headers_frames(stream.id, stream.trailers, end_stream=True, max_frame=self._peer_max_frame))
            self._close_stream(stream)

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            self._drain(stream)
        self._flush()

    def _close_stream(self, stream: Stream) -> None:
        """We sent END_STREAM: reset the client's half if it is still sending, and forget the stream."""
        if not stream.remote_closed:
            self._write(frames.rst_stream(stream.id, frames.NO_ERROR))
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if stream.closed:
            return
        stream.closed = True
        self._streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        if stream.route is not None:
            self.server.active -= 1
        if stream.timer is not None:
            stream.timer.cancel()
        task = stream.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self._draining and not self._streams:
            self.close()

    # --- output ---

    def _write(self, data: bytes) -> None:
        self._out.append(data)

    def _flush(self) -> None:
        if self._out and not self._closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def drain(self) -> None:
        """Server shutdown: refuse new streams, let the open ones finish, then close."""
        if self._closed:
            return
        self._draining = True
        self._write(frames.goaway(self._last_stream_id, frames.NO_ERROR))
        self._flush()
        if not self._streams:
            self.close()

    def _abort(self, reason: str, code: int = frames.PROTOCOL_ERROR) -> None:
        log.warning("closing connection: %s", reason)
        if not self._closed and self._preface_seen:
            self._write(frames.goaway(self._last_stream_id, code, reason.encode()[:200]))
        self._flush()
        self.close()

    def close(self) -> None:
        self._flush()
        self._closed = True
        if self.transport is not None:
            self.transport.close()
