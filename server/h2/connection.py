"""One client connection of the h2 frontend: gRPC calls on top of the shared HTTP/2 endpoint.

Only what gRPC needs: client streams carrying length-prefixed messages, responses as HEADERS + DATA +
trailers. Cheap calls are answered inside ``data_received``; the rest run as tasks.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import zlib
from collections.abc import AsyncIterator

from tailmark.http2 import endpoint, frames
from tailmark.http2.hpack_codec import OK_TRAILERS, RESPONSE_HEADERS, literal, timeout_seconds, trailers
from tailmark.server import security
from tailmark.server.h2.calls import Call, Route, status_code

log = logging.getLogger(__name__)

# gRPC status codes the transport itself answers with
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAUTHENTICATED = 16

_END = object()  # end of a stream's requests


class Stream(endpoint.Stream):
    __slots__ = ("body", "headers_sent", "remote_closed", "requests", "route", "task", "timer", "wbits")

    def __init__(self, stream_id: int, send_window: int) -> None:
        super().__init__(stream_id, send_window)
        self.route: Route | None = None  # None: answered before its body arrived
        self.body = bytearray()
        self.requests: asyncio.Queue | None = None  # streaming calls: messages as they complete
        self.remote_closed = False
        self.headers_sent = False
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.wbits: int | None = None  # zlib's wbits for the call's grpc-encoding (None: identity)


class Connection(endpoint.Endpoint):
    expects_preface = True

    def __init__(self, server) -> None:
        super().__init__()
        self.server = server  # H2GrpcServer: routes, limits, the set of live connections
        self._last_stream_id = 0
        self._draining = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            log.warning("TLS client did not negotiate h2 (ALPN); closing")
            transport.close()
            self.closed = True
            return
        self.server.connections.add(self)
        self.send_settings()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in list(self.streams.values()):
            self._forget(stream)

    # --- frames ---

    def on_header_block(self, stream_id: int, flags: int, headers: dict[str, str], too_large: str | None) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: they only end its half
            if flags & frames.END_STREAM:
                self._remote_end(stream)
            return
        if stream_id <= self._last_stream_id:
            self.write(frames.rst_stream(stream_id, frames.PROTOCOL_ERROR))
            return
        self._last_stream_id = stream_id
        if self._draining:
            self.write(frames.rst_stream(stream_id, frames.REFUSED_STREAM))
            return
        stream = self.streams[stream_id] = Stream(stream_id, self.peer_window)
        if too_large is not None:
            self._fail(stream, RESOURCE_EXHAUSTED, too_large)
        else:
            self._start(stream, headers)
        if flags & frames.END_STREAM and not stream.closed:
            self._remote_end(stream)

    def on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        end = flags & frames.END_STREAM
        streaming = stream is not None and stream.requests is not None
        # padding counts against flow control too; a streaming call's message bytes are given back only as
        # its handler takes them (_requests), so a client that outruns the model is held back by its window
        self.consumed(None if streaming else stream, len(payload), end)
        if stream is None or stream.route is None or stream.remote_closed:
            return  # a stream we have already answered or reset: its late data is dropped
        try:
            data = frames.unpad(flags & frames.PADDED, payload)
        except ValueError as exc:
            raise endpoint.ProtocolViolation(frames.PROTOCOL_ERROR, str(exc)) from None
        if streaming and not end and len(payload) > len(data):
            self.consumed_stream(stream, len(payload) - len(data))
        body = stream.body
        body += data
        if len(body) > self.server.max_message_bytes + 5:
            self._fail(stream, RESOURCE_EXHAUSTED, f"request message larger than {self.server.max_message_bytes} bytes")
            return
        if stream.requests is not None:
            self._take_messages(stream)
            if stream.closed:
                return
        if end:
            self._remote_end(stream)

    def on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:  # the client cancelled: stop the work, send nothing more
            self._forget(stream)

    def on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._draining = True  # the client opens no more streams here; ours finish
        if not self.streams:
            self.close()

    def on_sent_end(self, stream: Stream) -> None:
        self._close_stream(stream)

    def last_stream_id(self) -> int:
        return self._last_stream_id

    # --- calls ---

    def _start(self, stream: Stream, headers: dict[str, str]) -> None:
        """Admit a new call, or answer it at once (trailers only) when it cannot run."""
        server = self.server
        if headers.get(":method") != "POST":
            self._fail(stream, UNIMPLEMENTED, f"gRPC needs POST, not {headers.get(':method')!r}")
            return
        if not headers.get("content-type", "").startswith("application/grpc"):
            self.send_headers(stream, literal(":status", "415"), end_stream=True)
            self._close_stream(stream)
            return
        if server.auth_header is not None:
            given = headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, server.auth_header):
                self._fail(stream, UNAUTHENTICATED, security.UNAUTHENTICATED)
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
            stream.requests.put_nowait((message, 5 + length))

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
        self.flush_soon()

    def _answer(self, stream: Stream, call: Call) -> None:
        if call.error is None:
            self._send(stream, call.response, OK_TRAILERS)
        else:
            self._fail(stream, *call.error)

    async def _run_stream(self, stream: Stream, route: Route) -> None:
        try:
            async for response in route.stream(self._requests(stream)):
                self._send(stream, response, None)
                self.flush_soon()
        except asyncio.CancelledError:
            return
        except Exception as exc:  # the handler itself broke: end the call with its status
            self._fail(stream, *status_code(exc))
        else:
            self._send(stream, b"", OK_TRAILERS, framed=False)
        self.flush_soon()

    async def _requests(self, stream: Stream) -> AsyncIterator[bytes]:
        """The call's messages as its handler asks for them; each one taken gives its bytes of window back."""
        while True:
            item = await stream.requests.get()
            if item is _END:
                return
            message, wire_size = item
            if not stream.remote_closed and not stream.closed:
                self.consumed_stream(stream, wire_size)
                self.flush_soon()
            yield message

    def _deadline(self, stream: Stream) -> None:
        stream.timer = None
        if not stream.closed:
            if stream.task is not None:
                stream.task.cancel()
            self._fail(stream, DEADLINE_EXCEEDED, "deadline exceeded")
            self.flush()

    # --- sending ---

    def _send(self, stream: Stream, message: bytes, trailer_block: bytes | None, *, framed: bool = True) -> None:
        """Queue one response message (and, when given, the trailers that end the call) and send what fits."""
        if stream.closed:
            return
        if len(message) > self.server.max_message_bytes:  # as grpc's servers do with what they send
            limit = self.server.max_message_bytes
            self._fail(stream, RESOURCE_EXHAUSTED, f"response message larger than {limit} bytes")
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            self.send_headers(stream, RESPONSE_HEADERS)
        if framed:
            stream.queue_message(message)
        stream.end_block = trailer_block
        self.send_pending(stream)

    def _fail(self, stream: Stream, status: int, message: str) -> None:
        """End the call with a non-OK status: trailers only when nothing was sent yet."""
        if stream.closed:
            return
        block = trailers(status, message)
        if not stream.headers_sent:
            stream.headers_sent = True
            stream.outbox.clear()
            stream.outbox_sent = 0
            self.send_headers(stream, RESPONSE_HEADERS + block, end_stream=True)
            self._close_stream(stream)
            return
        stream.end_block = block
        task = stream.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # no responses after the status (its next _send would also drop these trailers)
        self.send_pending(stream)

    def _close_stream(self, stream: Stream) -> None:
        """We sent END_STREAM: reset the client's half if it is still sending, and forget the stream."""
        if not stream.remote_closed:
            self.write(frames.rst_stream(stream.id, frames.NO_ERROR))
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if stream.closed:
            return
        stream.closed = True
        self.streams.pop(stream.id, None)
        self.forget_blocked(stream)
        if stream.route is not None:
            self.server.active -= 1
        if stream.timer is not None:
            stream.timer.cancel()
        task = stream.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self._draining and not self.streams:
            self.close()

    # --- shutdown ---

    def drain(self) -> None:
        """Server shutdown: refuse new streams, let the open ones finish, then close."""
        if self.closed:
            return
        self._draining = True
        self.write(frames.goaway(self._last_stream_id, frames.NO_ERROR))
        self.flush()
        if not self.streams:
            self.close()
