"""One client connection of the h2 frontend: a thin asyncio adapter over the sans-IO HTTP/2 connection
(tailmark/http2/connection.py) and gRPC framing (tailmark/grpc_wire/).

It moves bytes between the socket and ``H2Connection``, turns its events into calls, and keeps the I/O side
of the limits: at most ``frames_per_turn`` frames per loop turn (then reading pauses until a later turn, so
one busy peer cannot starve the others), no reading while the socket will not take our output, a timer for
the connection's timeouts, and an abort shortly after a GOAWAY a peer does not read. Cheap calls are
answered inside ``data_received``; the rest run as tasks, and a reset stream's task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from tailmark.grpc_wire.messages import MessageError, MessageReader, prefix
from tailmark.grpc_wire.metadata import OK_TRAILERS, RESPONSE_HEADERS, trailers
from tailmark.grpc_wire.status import Status
from tailmark.http2 import frames
from tailmark.http2.connection import H2Connection
from tailmark.http2.events import (
    ConnectionTerminated,
    DataReceived,
    GoAwayReceived,
    HeadersReceived,
    RequestReceived,
    StreamReset,
)
from tailmark.http2.hpack_codec import literal
from tailmark.server.h2.calls import NOT_GRPC, Call, GrpcCall, Route, admit, status_code

log = logging.getLogger(__name__)

_END = object()  # end of a stream's requests
ADMISSION_CACHE = 64  # distinct request header dicts whose admission is remembered, per connection
TIMER_S = 1.0  # how often the connection's timeouts are checked
ABORT_AFTER_S = 1.0  # a closing connection whose peer does not read is dropped after this
WRITE_HIGH_WATER = 1 << 20  # socket output held before reading stops (asyncio's pause_writing)


class H2Protocol(asyncio.Protocol):
    def __init__(self, server) -> None:
        self.server = server  # H2GrpcServer: routes, limits, the set of live connections
        self.h2 = H2Connection(limits=server.h2_limits, report_closed=False)  # a call ends when its status is queued
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._turn_scheduled = False
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_backlog = 0
        self._input_held = 0  # request bytes held for incomplete messages and unended unary calls, all streams
        self._output_waiters: dict[GrpcCall, asyncio.Future] = {}  # streaming calls held back by their output
        self._admissions: dict[int, tuple] = {}  # id(headers dict) -> what _admit made of it

    # --- asyncio.Protocol ---

    def connection_made(self, transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            log.warning("TLS client did not negotiate h2 (ALPN); closing")
            transport.close()
            self.closed = True
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.server.connections.add(self)
        self.h2.initiate()
        self.flush()
        self._timer = self._loop.call_later(TIMER_S, self._tick)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        for stream in list(self.h2.streams.values()):
            if stream.user is not None:
                self._finish(stream.user)

    def data_received(self, data: bytes) -> None:
        self._handle(self.h2.receive_data(data))
        self._after_turn()

    def pause_writing(self) -> None:
        self._write_paused = True
        if not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.h2.progress()
        if not self.closed and not self._turn_scheduled:
            self.transport.resume_reading()

    # --- turns: bounded work per loop turn ---

    def _after_turn(self) -> None:
        if self._output_waiters:
            self._release_output_waiters()
        self.flush()
        if self.h2.input_pending and not self.closed and not self._turn_scheduled:
            self._turn_scheduled = True
            self.transport.pause_reading()
            self._loop.call_soon(self._next_turn)

    def _release_output_waiters(self) -> None:
        """Streaming calls whose queued answers have drained (or that ended) take messages again."""
        limit = self.h2.limits.max_stream_output
        for call, waiter in list(self._output_waiters.items()):
            if call.done or call.stream.outbox_bytes <= limit:
                del self._output_waiters[call]
                if not waiter.done():
                    waiter.set_result(None)

    def _next_turn(self) -> None:
        self._turn_scheduled = False
        if self.closed:
            return
        self._handle(self.h2.receive_data(b""))
        self._after_turn()
        if not self._turn_scheduled and not self._write_paused and not self.closed:
            self.transport.resume_reading()

    def _tick(self) -> None:
        """Once a second: the connection's timeouts (a write that makes no progress among them)."""
        if self.closed:
            return
        backlog = self.transport.get_write_buffer_size()
        if backlog < self._last_backlog:
            self.h2.progress()
        self._last_backlog = self.h2.write_backlog = backlog
        if self.h2.check_timeouts():
            self._handle(self.h2.events)
            self.flush()
        self._timer = self._loop.call_later(TIMER_S, self._tick)

    def _handle(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                self._data(event)
            elif kind is RequestReceived:
                self._start(event)
            elif kind is StreamReset:
                call = event.stream.user
                if call is not None:  # the client cancelled (or we reset it): stop the work, send nothing more
                    self._finish(call)
            elif kind is HeadersReceived:  # trailers from the client: they only end its half
                call = event.stream.user
                if call is not None and event.end_stream:
                    self._remote_end(call)
            elif kind is GoAwayReceived:
                self.h2.draining = True  # the client opens no more streams here; ours finish
            elif kind is ConnectionTerminated:
                if event.code != frames.NO_ERROR:
                    log.warning("closing HTTP/2 connection: %s (%s)", event.reason, self.h2.counters.as_dict())
                self._terminate()

    # --- output ---

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if self.closed:
            return
        if data:
            self.transport.write(data)
            backlog = self.transport.get_write_buffer_size()
            self.h2.write_backlog = backlog
            if not backlog:
                self.h2.output_flushed()
        if self.h2.terminated:
            self._terminate()
        elif self.h2.draining and not self.h2.streams:
            self.close()

    def flush_soon(self) -> None:
        """Flush at the end of this turn of the event loop: the answers of one batch, which complete in the
        same turn, leave in one write instead of one each."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    # --- calls ---

    def _start(self, event: RequestReceived) -> None:
        """Admit a new call, or answer it at once (trailers only) when it cannot run."""
        stream = event.stream
        if stream.reset_code is not None:  # reset later in the same batch: no work for it at all
            return
        call = stream.user = GrpcCall(stream)
        if event.error is not None:
            self._fail(call, Status.RESOURCE_EXHAUSTED, event.error)
            return
        headers = event.headers
        # a client sends the same header block call after call, and the decoder hands back the same dict for
        # it: what the headers decide is worked out once per dict (held here, so its id is not reused)
        admission = self._admissions.get(id(headers))
        if admission is None or admission[0] is not headers:
            admission = admit(self.server, headers)
            if len(self._admissions) >= ADMISSION_CACHE:
                self._admissions.clear()
            self._admissions[id(headers)] = admission
        _, refusal, route, wbits, timeout = admission
        if refusal is not None:
            if refusal is NOT_GRPC:
                call.done = call.headers_sent = True
                self.h2.send_headers(stream, literal(":status", "415"), end_stream=True)
            else:
                self._fail(call, *refusal)
            return
        server = self.server
        if server.max_concurrent_rpcs and server.active >= server.max_concurrent_rpcs:
            self._fail(call, Status.RESOURCE_EXHAUSTED, "server busy: too many concurrent RPCs")
            return
        server.active += 1
        call.route = route
        call.reader = MessageReader(server.max_message_bytes, wbits, server.max_inflated_bytes)
        if timeout is not None:
            call.timer = self._loop.call_later(timeout, self._deadline, call)
        if route.streaming:
            call.requests = asyncio.Queue()
            call.task = asyncio.ensure_future(self._run_stream(call, route))
        if event.end_stream:
            self._remote_end(call)

    def _data(self, event: DataReceived) -> None:
        stream = event.stream
        call = stream.user
        if call is None or call.done or stream.reset_code is not None:
            if stream.remote_open:
                self.h2.acknowledge_stream(stream, event.flow_size)
            return
        if call.requests is None:  # unary: its bytes are buffered here, so the window is given back at once
            self.h2.acknowledge_stream(stream, event.flow_size)
            try:
                call.messages += call.reader.feed(event.data)
            except MessageError as exc:
                self._fail(call, exc.status, str(exc))
                return
            if len(call.messages) > 1:
                self._fail(call, Status.INTERNAL, "a unary call needs exactly one request message")
                return
            if not event.end_stream:  # (a request that ends here is taken at once: nothing is held)
                self._hold(call, call.reader.buffered + (len(call.messages[0]) if call.messages else 0))
                if call.done:
                    return
        else:
            self._stream_data(call, event)
            if call.done:
                return
        if event.end_stream:
            self._remote_end(call)

    def _stream_data(self, call: GrpcCall, event: DataReceived) -> None:
        """A streaming call's DATA. The bytes of a message still arriving are given back at once (a message
        may be larger than the window); those of complete messages only as the handler takes them
        (_requests), so a client that outruns the model is held back by its window, and one that sends past
        it anyway gets FLOW_CONTROL_ERROR."""
        data = event.data
        try:
            messages = call.reader.feed(data)
        except MessageError as exc:
            self._fail(call, exc.status, str(exc))
            return
        self._hold(call, call.reader.buffered)
        if call.done:
            return
        partial = min(call.reader.buffered, len(data))  # this frame's bytes of the message still arriving
        self.h2.acknowledge_stream(call.stream, event.flow_size - len(data) + partial)  # padding too
        if messages:
            for message in messages[:-1]:
                call.requests.put_nowait((message, 0))
            call.requests.put_nowait((messages[-1], len(data) - partial))

    def _hold(self, call: GrpcCall, held: int) -> None:
        """``held`` bytes of the call's request wait for the rest of it: past the connection's limit on such
        bytes, the stream that went over is reset (ENHANCE_YOUR_CALM) and what it held is dropped."""
        self._input_held += held - call.held
        call.held = held
        if self._input_held > self.h2.limits.max_buffered_input:
            self.h2.counters.buffered_input += 1
            self.h2.reset_stream(call.stream, frames.ENHANCE_YOUR_CALM)
            self._finish(call)

    def _remote_end(self, call: GrpcCall) -> None:
        route = call.route
        if route is None or call.done:
            return
        if call.held:
            self._input_held -= call.held
            call.held = 0
        if route.streaming:
            try:
                call.reader.finish()
            except MessageError as exc:
                self._fail(call, exc.status, str(exc))
                return
            call.requests.put_nowait(_END)
            return
        if len(call.messages) != 1 or call.reader.buffered:
            self._fail(call, Status.INTERNAL, "a unary call needs exactly one request message")
            return
        message = call.messages.pop()
        result = route.call(message)
        if isinstance(result, Call):  # finished without waiting
            self._answer(call, result)
        else:
            call.task = asyncio.ensure_future(self._run_unary(call, result))

    async def _run_unary(self, call: GrpcCall, awaitable) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            return
        self._answer(call, result)
        self.flush_soon()

    def _answer(self, call: GrpcCall, result: Call) -> None:
        if result.error is None:
            self._send(call, result.response, OK_TRAILERS)
        else:
            self._fail(call, *result.error)

    async def _run_stream(self, call: GrpcCall, route: Route) -> None:
        try:
            async for response in route.stream(self._requests(call)):
                self._send(call, response, None)
                self.flush_soon()
        except asyncio.CancelledError:
            return
        except Exception as exc:  # the handler itself broke: end the call with its status
            self._fail(call, *status_code(exc))
        else:
            self._end(call, OK_TRAILERS)
        self.flush_soon()

    async def _requests(self, call: GrpcCall) -> AsyncIterator[bytes]:
        """The call's messages as its handler asks for them; each one taken gives its bytes of window back.
        While the call's answers wait for a client that does not read (more than ``max_stream_output``
        queued), no more messages are taken, so their window stays closed and the client cannot send more."""
        limit = self.h2.limits.max_stream_output
        while True:
            if call.stream.outbox_bytes > limit and not call.done:
                self.h2.counters.stream_output += 1
                waiter = self._output_waiters[call] = self._loop.create_future()
                await waiter
            item = await call.requests.get()
            if item is _END:
                return
            message, wire_size = item
            if wire_size and not call.done:
                self.h2.acknowledge_stream(call.stream, wire_size)
                self.flush_soon()
            yield message

    def _deadline(self, call: GrpcCall) -> None:
        call.timer = None
        if not call.done:
            self._fail(call, Status.DEADLINE_EXCEEDED, "deadline exceeded")
            self.flush()

    # --- sending ---

    def _send(self, call: GrpcCall, message: bytes, trailer_block: bytes | None) -> None:
        """Queue one response message (and, when given, the trailers that end the call) and send what fits."""
        if call.done:
            return
        limit = self.server.max_message_bytes
        if len(message) > limit:  # as grpc's servers do with what they send
            self._fail(call, Status.RESOURCE_EXHAUSTED, f"response message larger than {limit} bytes")
            return
        if not call.headers_sent:
            call.headers_sent = True
            if trailer_block is not None:  # a unary answer: in one pass when the windows allow
                self.h2.send_response(call.stream, RESPONSE_HEADERS, (prefix(len(message)), message), trailer_block)
                self._finish(call)
                return
            self.h2.send_headers(call.stream, RESPONSE_HEADERS)
        self.h2.send_data(call.stream, prefix(len(message)), message)
        if trailer_block is not None:
            self._end(call, trailer_block)

    def _end(self, call: GrpcCall, trailer_block: bytes) -> None:
        if call.done:
            return
        if not call.headers_sent:
            call.headers_sent = True
            self.h2.send_headers(call.stream, RESPONSE_HEADERS + trailer_block, end_stream=True)
        else:
            self.h2.end_stream(call.stream, trailer_block)
        self._finish(call)

    def _fail(self, call: GrpcCall, status: int, message: str) -> None:
        """End the call with a non-OK status (what was queued before it still goes out first)."""
        self._end(call, trailers(status, message))

    def _finish(self, call: GrpcCall) -> None:
        """The call is over (its status is queued, or the stream was reset): free its slot, stop its work."""
        if call.done:
            return
        call.done = True
        if call.held:
            self._input_held -= call.held
            call.held = 0
            call.reader, call.messages = None, []  # what it held can go now (the call and its stream are a cycle)
        if call.route is not None:
            self.server.active -= 1
        if call.timer is not None:
            call.timer.cancel()
        self._output_waiters.pop(call, None)
        task = call.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # no responses after the status (and none for a reset stream)

    # --- ending ---

    def _terminate(self) -> None:
        """We sent GOAWAY over an error: stop every call, close, and drop the peer if it does not read."""
        if self.closed:
            return
        for stream in list(self.h2.streams.values()):
            if stream.user is not None:
                self._finish(stream.user)
        self.close()
        self._loop.call_later(ABORT_AFTER_S, self.transport.abort)

    def drain(self) -> None:
        """Server shutdown: refuse new streams, let the open ones finish, then close."""
        if self.closed:
            return
        self.h2.goaway()
        self.flush()

    def close(self) -> None:
        if self.closed:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)
        self.closed = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self.transport.close()
