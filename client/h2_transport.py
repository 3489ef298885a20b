"""KServe-v2 over tailmark's own HTTP/2 client (``--transport h2``).

grpc.aio spends ~200 µs of CPU on each call in its own layers, which caps one client process near
1,000 requests/s on a small machine. This transport speaks the same gRPC wire protocol over the sans-IO
HTTP/2 connection the server uses too (tailmark/http2/connection.py, client side) and tailmark/grpc_wire:
``ClientConnection`` only moves bytes between the socket and ``H2Connection`` and turns its events into
the ends of calls. The request's header block is encoded once, the payload arrives pre-serialised, and the
response stays bytes. Several connections (``connections``) spread calls over server workers that share a
port.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import ssl
from collections.abc import Sequence
from urllib.parse import unquote

from tailmark.client.control import ControlRpcs, control_error
from tailmark.client.errors import ConfigError, TlsError, Unreachable
from tailmark.client.transport import RequestFailed, TlsSettings
from tailmark.grpc_wire.messages import MessageError, inflate
from tailmark.grpc_wire.metadata import timeout_value
from tailmark.grpc_wire.status import HTTP_STATUS, RESET_STATUS, Status, status_name
from tailmark.http2 import frames
from tailmark.http2.connection import H2Connection
from tailmark.http2.events import (
    ConnectionTerminated,
    DataReceived,
    GoAwayReceived,
    HeadersReceived,
    SettingsReceived,
    StreamReset,
)
from tailmark.http2.hpack_codec import literal
from tailmark.http2.limits import Limits
from tailmark.http2.stream_state import CLOSED, Stream
from tailmark.protos.service import RPCS

INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED = Status.INTERNAL, Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED
LAST_STREAM_ID = 2**31 - 1
INFLATE_LIMIT = 2**31 - 1  # a compressed answer is inflated a megabyte at a time up to this
BLOCK_CACHE = 256
# The server's limits, but our own requests waiting for the server's window never hold back the window we
# give it: a client that withheld it while the server withheld its own would leave both waiting forever.
CLIENT_LIMITS = Limits(max_buffered_output=2**62)


class _Call(Stream):
    """One unary call, and its HTTP/2 stream (idle, id 0, while it waits for the server's stream limit)."""

    __slots__ = ("block", "body", "compressed", "done", "future", "headers_seen", "payload", "timer")

    def __init__(self, block: bytes, payload: bytes, future: asyncio.Future) -> None:
        Stream.__init__(self, 0, 0, 0)  # id and windows are set when it opens
        self.block = block
        self.payload = payload
        self.future = future
        self.headers_seen = False
        self.body = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.compressed = False
        self.done = False


class ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection carrying unary gRPC calls: an asyncio adapter over ``H2Connection``."""

    def __init__(self, head: tuple[bytes, bytes], limits: Limits = CLIENT_LIMITS) -> None:
        self.h2 = H2Connection(client=True, limits=limits, report_closed=False)
        # (:method, :scheme, :authority) and (content-type, te, user-agent, metadata), encoded once: :path
        # goes between them, as pseudo-header fields come before the others (RFC 9113 §8.3)
        self._pseudo, self._regular = head
        self._blocks: dict[tuple[str, float | None], bytes] = {}  # whole request header blocks, built once
        self._queued: collections.deque[_Call] = collections.deque()  # over the server's stream limit
        self._going_away = False
        self._turn_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.settled: asyncio.Future | None = None  # done once the server's SETTINGS arrive
        self.lost_reason = ""

    # --- asyncio.Protocol ---

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self.settled = self._loop.create_future()
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self.lost_reason = "the server did not negotiate HTTP/2 (ALPN h2)"
            self.close()
            return
        self.h2.initiate()
        self.flush()

    def connection_lost(self, exc) -> None:
        self.closed = True
        reason = self.lost_reason or (f"connection lost: {exc}" if exc else "connection closed by the server")
        self.lost_reason = reason
        if self.settled is not None and not self.settled.done():
            self.settled.set_exception(ConnectionError(reason))
        self._fail_all(reason)

    def data_received(self, data: bytes) -> None:
        self._handle(self.h2.receive_data(data))
        self._after_turn()

    def _after_turn(self) -> None:
        self.flush()
        if self.h2.input_pending and not self.closed and not self._turn_scheduled:
            # at most frames_per_turn frames a turn: the rest on a later one, so the calls' own tasks run too
            self._turn_scheduled = True
            self.transport.pause_reading()
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_scheduled = False
        if self.closed:
            return
        self._handle(self.h2.receive_data(b""))
        self._after_turn()
        if not self._turn_scheduled and not self.closed:
            self.transport.resume_reading()

    @property
    def usable(self) -> bool:
        return not (self.closed or self._going_away)

    # --- calls ---

    def call(self, path: str, payload: bytes, timeout_s: float | None) -> _Call:
        """Start a unary call; its ``future`` gets the response message or a RequestFailed."""
        loop = self._loop
        block = self._blocks.get((path, timeout_s)) or self._block(path, timeout_s)
        call = _Call(block, payload, loop.create_future())
        if not self.usable:
            call.future.set_exception(RequestFailed("UNAVAILABLE", self.lost_reason or "connection is closing"))
            return call
        if timeout_s:
            call.timer = loop.call_later(timeout_s, self._expire, call)
        if len(self.h2.streams) >= self.h2.peer_max_streams:
            self._queued.append(call)
        else:
            self._open(call)
            self.flush()
        return call

    def _block(self, path: str, timeout_s: float | None) -> bytes:
        """The request's header block; kept for the next call with the same path and timeout (per-request
        deadlines all differ: past BLOCK_CACHE of them, new ones are built each time instead)."""
        block = self._pseudo + literal(":path", path) + self._regular
        if timeout_s:
            block += literal("grpc-timeout", timeout_value(timeout_s))
        if len(self._blocks) < BLOCK_CACHE:
            self._blocks[(path, timeout_s)] = block
        return block

    def cancel(self, call: _Call) -> None:
        """The caller gave up (its task was cancelled): reset the stream, drop the response."""
        self._finish(call, Status.CANCELLED, "cancelled by the client")
        self.flush()

    def _open(self, call: _Call) -> None:
        h2 = self.h2
        if h2.next_stream_id >= LAST_STREAM_ID:  # ids are spent (~30 h at 10k/s): new calls go to a new connection
            self._going_away = True
        h2.open_stream(call.block, stream=call)
        payload = call.payload
        h2.send_data(call, len(payload).to_bytes(5, "big"), payload, end_stream=True)  # gRPC's prefix, uncompressed

    # --- responses ---

    def _handle(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is HeadersReceived:
                self._headers(event)
            elif kind is DataReceived:
                call = event.stream
                if not event.end_stream:
                    self.h2.acknowledge_stream(call, event.flow_size)
                if not call.done:
                    call.body += event.data
                    if event.end_stream:
                        self._finish(call, INTERNAL, "response ended without trailers")
            elif kind is StreamReset:
                if event.remote:
                    message = f"stream reset by the server (code {event.code})"
                    self._finish(event.stream, RESET_STATUS.get(event.code, INTERNAL), message)
                else:
                    message = f"the server broke the protocol on the stream (code {event.code})"
                    self._finish(event.stream, INTERNAL, message)
            elif kind is SettingsReceived:
                if not self.settled.done():
                    self.settled.set_result(None)
                self._open_queued()
            elif kind is GoAwayReceived:
                self._going_away = True
                last = event.last_stream_id
                for call in [call for call in self.h2.streams.values() if call.id > last]:
                    self._finish(call, UNAVAILABLE, "the server is going away (GOAWAY)")
                for call in list(self._queued):
                    self._finish(call, UNAVAILABLE, "the server is going away (GOAWAY)")
                if not self.h2.streams:
                    self.close()
            elif kind is ConnectionTerminated:
                self.lost_reason = f"the server broke the protocol: {event.reason}"
                self.close()

    def _headers(self, event: HeadersReceived) -> None:
        call = event.stream
        if call.done:
            return
        headers = event.headers
        if event.error is not None:
            self._finish(call, INTERNAL, f"response headers: {event.error}")
            return
        if not call.headers_seen:
            call.headers_seen = True
            status = headers.get(":status", "")
            if status != "200":
                code = HTTP_STATUS.get(status, Status.UNKNOWN)
                self._finish(call, code, f"HTTP status {status or 'missing'} from the server")
                return
            call.compressed = headers.get("grpc-encoding", "identity") != "identity"
            if "grpc-status" not in headers:
                if event.end_stream:
                    self._finish(call, INTERNAL, "response ended without a gRPC status")
                return  # the message and the trailers follow
        status = headers.get("grpc-status", "2")
        if status == "0":
            self._finish(call, 0, "")
            return
        try:
            code = int(status)
        except ValueError:
            code = Status.UNKNOWN
        self._finish(call, code, unquote(headers.get("grpc-message", "")))

    def _expire(self, call: _Call) -> None:
        call.timer = None
        self._finish(call, DEADLINE_EXCEEDED, "deadline exceeded")
        self.flush()

    def _finish(self, call: _Call, code: int, message: str) -> None:
        """The call is over: its future gets the answer or the error; a stream still open is reset (CANCEL), so
        neither side sends more on it."""
        if call.done:
            return
        call.done = True
        if call.timer is not None:
            call.timer.cancel()
        if not call.id:  # never opened
            with contextlib.suppress(ValueError):
                self._queued.remove(call)
        elif call.state is not CLOSED and not self.closed:
            self.h2.reset_stream(call, frames.CANCEL)
        future = call.future
        if not future.done():
            if code == 0:
                self._resolve(call)
            else:
                future.set_exception(RequestFailed(status_name(code), message))
        if self._going_away and not self.h2.streams:
            self.close()
        elif self._queued:
            self._open_queued()

    def _open_queued(self) -> None:
        queued, h2 = self._queued, self.h2
        while queued and len(h2.streams) < h2.peer_max_streams and self.usable:
            self._open(queued.popleft())

    def _fail_all(self, reason: str) -> None:
        for call in [*self.h2.streams.values(), *self._queued]:
            self._finish(call, UNAVAILABLE, reason)
        self._queued.clear()

    @staticmethod
    def _resolve(call: _Call) -> None:
        body = call.body
        if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
            call.future.set_exception(RequestFailed("INTERNAL", "the response is not exactly one message"))
            return
        message = bytes(body[5:])
        if body[0]:
            if not call.compressed:
                call.future.set_exception(RequestFailed("INTERNAL", "compressed response without grpc-encoding"))
                return
            try:
                message = bytes(inflate(message, 47, INFLATE_LIMIT))  # 47: a gzip or zlib header, detected
            except MessageError as exc:
                call.future.set_exception(RequestFailed(exc.status.name, f"the response: {exc}"))
                return
        call.future.set_result(message)

    # --- output and end ---

    def flush(self) -> None:
        h2 = self.h2
        data = h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)
            # acks of the server's PINGs and SETTINGS count against its control-frame limit until they are out
            if h2.control_backlog and not self.transport.get_write_buffer_size():
                h2.output_flushed()

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def split_target(target: str) -> tuple[str, int]:
    """ "host:port", "[v6]:port" or "dns:///host:port" → (host, port)."""
    address = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"target {target!r} needs host:port")
    return host.strip("[]"), int(port)


class H2Transport(ControlRpcs):
    """The Transport interface on ClientConnection. Create with ``await H2Transport.connect(...)``."""

    def __init__(
        self,
        target: str,
        *,
        tls: TlsSettings | None,
        metadata: Sequence[tuple[str, str]],
        timeout_s: float,
        connections: int,
    ) -> None:
        self.target = target
        self._host, self._port = split_target(target)
        for key, value in metadata:
            if not (key.isascii() and value.isascii()):
                raise ConfigError(f"header {key!r}: names and values must be ASCII (HTTP/2 metadata)")
        self._ssl = tls.ssl_context("h2") if tls is not None else None
        authority = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        pseudo = (
            b"\x83"  # :method POST (static table 3)
            + (b"\x87" if tls is not None else b"\x86")  # :scheme https / http
            + literal(":authority", authority)
        )
        regular = (
            literal("content-type", "application/grpc")
            + literal("te", "trailers")
            + literal("user-agent", "tailmark-h2")
            + b"".join(literal(key.lower(), value) for key, value in metadata)
        )
        self._head = (pseudo, regular)
        self._timeout = timeout_s or None
        self._connections: list[ClientConnection | None] = [None] * max(1, connections)
        self._reconnecting: dict[int, asyncio.Task] = {}
        self._next = itertools.cycle(range(len(self._connections)))

    @classmethod
    async def connect(
        cls,
        target: str,
        *,
        tls: TlsSettings | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        connections: int = 1,
    ) -> H2Transport:
        """Open the connections and wait for the server's HTTP/2 settings; Unreachable/TlsError if not."""
        transport = cls(target, tls=tls, metadata=metadata, timeout_s=timeout_s, connections=connections)
        try:
            for index in range(len(transport._connections)):
                transport._connections[index] = await transport._open(connect_timeout_s)
        except BaseException:
            await transport.aclose()
            raise
        return transport

    async def _open(self, timeout_s: float = 10.0) -> ClientConnection:
        loop = asyncio.get_running_loop()
        tls_hint = " (a TLS/plain-text mismatch looks like this too)" if self._ssl is not None else ""
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: ClientConnection(self._head),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
                await connection.settled
        except TimeoutError:
            raise Unreachable(f"cannot connect to {self.target} within {timeout_s:g} s{tls_hint}") from None
        except ssl.SSLError as exc:
            hint = "; does the server serve TLS?" if exc.reason == "WRONG_VERSION_NUMBER" else ""
            reason = exc.reason or exc
            raise TlsError(f"cannot connect to {self.target}: TLS handshake failed ({reason}){hint}") from None
        except OSError as exc:  # refused, unreachable, reset, closed before settings
            if self._ssl is None and isinstance(exc, ConnectionError):
                tls_hint = " (does the server expect TLS?)"
            raise Unreachable(f"cannot connect to {self.target}: {exc.strerror or exc}{tls_hint}") from None
        return connection

    async def _reconnect(self, index: int) -> ClientConnection:
        task = self._reconnecting.get(index)  # one reconnect per slot, shared by the calls that need it
        if task is None:
            task = self._reconnecting[index] = asyncio.ensure_future(self._open())
            task.add_done_callback(lambda _: self._reconnecting.pop(index, None))
        try:
            connection = self._connections[index] = await asyncio.shield(task)
        except (Unreachable, TlsError) as exc:
            raise RequestFailed("UNAVAILABLE", str(exc)) from None
        return connection

    async def call(self, path: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        index = next(self._next)
        connection = self._connections[index]
        if connection is None or not connection.usable:
            connection = await self._reconnect(index)
        call = connection.call(path, payload, timeout_s)
        try:
            return await call.future
        except asyncio.CancelledError:
            connection.cancel(call)
            raise

    async def infer(self, payload: bytes, timeout_s: float | None = None) -> bytes:
        return await self.call(INFER_PATH, payload, timeout_s or self._timeout)

    async def _control(self, name: str, request):
        rpc = RPCS[name]
        try:
            data = await self.call(rpc.path, request.SerializeToString(), self._timeout or 30.0)
        except RequestFailed as exc:
            raise control_error(self.target, name, request, exc.status, exc.message) from None
        return rpc.response.FromString(data)

    async def aclose(self) -> None:
        for task in list(self._reconnecting.values()):
            task.cancel()
        for connection in self._connections:
            if connection is not None and not connection.closed:
                connection.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


INFER_PATH = RPCS["ModelInfer"].path
