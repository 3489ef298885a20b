"""The KServe-v2 REST frontend (``tailmark serve --http-port N``): HTTP/1.1 keep-alive on asyncio with h11,
the same core as the gRPC stacks.

Routes: ``/v2/health/{live,ready}``, ``/v2`` (server metadata), ``/v2/models/{m}[/versions/{v}]`` (metadata),
``.../ready``, ``.../config``, ``.../stats``, ``POST .../infer``; and, for the generative models, the
OpenAI-compatible ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions`` (server/http/openai.py;
streamed answers go out with chunked transfer encoding, one chunk per event, and a client that disconnects
cancels its generation). Errors answer ``{"error": "..."}`` with the
status the table below gives each core error; the connection stays up after them. TLS (and client
certificates with ``--tls-ca``) and the bearer token apply as on gRPC (and on /v1); so does the request-size limit
(``--max-message-bytes``: 413 before the body is read). A slow client holds only its own connection: the
body is read as it arrives, and an idle or half-sent request is closed after ``IDLE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import unquote

import h11
from google.protobuf import json_format

from tailmark.server import errors
from tailmark.server.http import openai
from tailmark.server.http.openai import EventStream
from tailmark.server.http.rest import infer_answer, parse_infer
from tailmark.server.listen import AsyncioFrontend

STATUS_BY_ERROR: dict[type[errors.ServerError], int] = {
    errors.ModelNotFound: 404,
    errors.ModelUnavailable: 503,
    errors.InvalidInput: 400,
    errors.Unsupported: 400,
    errors.Overloaded: 429,
    errors.RequestTimedOut: 503,
    errors.ModelFailed: 500,
}
IDLE_TIMEOUT_S = 60.0
LINGER_S = 2.0
MAX_HEAD_BYTES = 64 << 10


class RouteNotFound(errors.ServerError):
    """No REST route matches the method and path."""


def _json(message) -> bytes:
    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(document).encode()


def _metadata(message) -> bytes:
    """Model metadata as Triton writes it (shapes as numbers, not protobuf JSON's int64 strings)."""

    def tensors(items):
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    document = {"name": message.name, "versions": list(message.versions), "platform": message.platform}
    return json.dumps({**document, "inputs": tensors(message.inputs), "outputs": tensors(message.outputs)}).encode()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.transport: asyncio.Transport | None = None
        self.request: h11.Request | None = None
        self.chunks: list[bytes] = []
        self.received = 0
        self.busy = False  # an answer is being computed: further bytes wait in h11's buffer
        self.task: asyncio.Task | None = None  # the /v1 answer in progress: cancelled if the client goes away
        self.timer: asyncio.TimerHandle | None = None
        self.lingering = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        self._arm()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self.task is not None:
            self.task.cancel()
        if self.timer is not None:
            self.timer.cancel()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self.close)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the answer went out; the rest of a refused body is read and dropped
            return
        self.h11.receive_data(data)
        if not self.busy:
            self._arm()
            self._next()

    def eof_received(self):
        if self.lingering:
            return None  # asyncio then closes the transport
        self.h11.receive_data(b"")
        if not self.busy:
            self._next()

    def _next(self) -> None:
        while not self.busy:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._reply_error(exc.error_status_hint, f"malformed HTTP request: {exc}")
                return
            kind = type(event)
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if kind is h11.Request:
                self.request, self.chunks, self.received = event, [], 0
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > self.server.settings.max_message_bytes:
                    limit = self.server.settings.max_message_bytes
                    self._reply_error(413, f"request body of {int(length)} bytes exceeds {limit}")
                    return
            elif kind is h11.Data:
                self.chunks.append(event.data)
                self.received += len(event.data)
                if self.received > self.server.settings.max_message_bytes:
                    self._reply_error(413, "request body too large")
                    return
            elif kind is h11.EndOfMessage:
                self.busy = True
                if self.timer is not None:  # computing an answer is not idling (a long generation takes minutes)
                    self.timer.cancel()
                task = asyncio.get_running_loop().create_task(self._handle(self.request, b"".join(self.chunks)))
                if _is_openai(self.request):
                    self.task = task
                return
            elif kind is h11.ConnectionClosed:
                self.close()
                return

    async def _handle(self, request: h11.Request, body: bytes) -> None:
        headers = dict(request.headers)
        try:
            status, extra, answer = await self.server.route(request, headers, body)
            if isinstance(answer, EventStream):
                await self._stream(status, extra, answer)
                answer = None
        except asyncio.CancelledError:  # the client went away mid-answer (a /v1 request)
            return
        except errors.ServerError as exc:
            status = 404 if isinstance(exc, RouteNotFound) else STATUS_BY_ERROR.get(type(exc), 500)
            status, extra, answer = status, [], json.dumps({"error": str(exc)}).encode()
        except Exception as exc:  # a bug must not take the connection's other requests down
            status, extra, answer = 500, [], json.dumps({"error": f"internal error: {exc!r}"}).encode()
            if self.h11.our_state is not h11.SEND_RESPONSE:  # a stream broke after its head went out: cut it
                self.close()
                return
        self.task = None
        if answer is not None:
            self._send(status, extra, answer)
        self.busy = False
        if self.transport is not None and not self.transport.is_closing():
            self._arm()
            self._next()

    def _send(self, status: int, extra: list, body: bytes, last: bool = False) -> None:
        """Write one answer; ``last``: say ``connection: close`` and leave closing to the caller."""
        content_type = b"application/octet-stream" if extra else b"application/json"
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *extra]
        if last:
            headers.append((b"connection", b"close"))
        try:
            out = self.h11.send(h11.Response(status_code=status, headers=headers))
            out += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.close()
            return
        self.transport.write(out)
        if not last:
            self._next_cycle()

    async def _stream(self, status: int, extra: list, stream: EventStream) -> None:
        """Write the head now and each chunk as the stream yields it (chunked transfer encoding: no
        content-length)."""
        headers = [(b"content-type", stream.content_type), (b"cache-control", b"no-cache"), *extra]
        self.transport.write(self.h11.send(h11.Response(status_code=status, headers=headers)))
        async for data in stream.chunks:
            self.transport.write(self.h11.send(h11.Data(data=data)))
        self.transport.write(self.h11.send(h11.EndOfMessage()))
        self._next_cycle()

    def _next_cycle(self) -> None:
        if self.h11.our_state is h11.MUST_CLOSE:
            self.close()
            return
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:  # the client has not finished sending its request: close after it
            self.close()

    def _reply_error(self, status: int, message: str) -> None:
        """Answer and close; the client's unsent body is read and dropped for up to LINGER_S first, so that it
        reads the answer instead of a reset (closing with unread bytes makes the kernel send RST)."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = openai.error_body(message) if _is_openai(self.request) else json.dumps({"error": message}).encode()
            self._send(status, [], body, last=True)
        self.lingering = True
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(LINGER_S, self.close)


def _is_openai(request: h11.Request | None) -> bool:
    return request is not None and request.target.startswith(b"/v1/")


class HttpServer(AsyncioFrontend):
    """``await start()`` -> port, ``await stop(grace_s)``; the same interface as the gRPC frontends."""

    alpn = "http/1.1"

    def _connection(self) -> _Connection:
        return _Connection(self)

    def _pending(self) -> bool:
        return any(c.busy for c in self.connections)

    async def route(self, request: h11.Request, headers: dict, body: bytes) -> tuple[int, list, bytes | EventStream]:
        if self.auth_header is not None and headers.get(b"authorization") != self.auth_header:
            if _is_openai(request):
                return 401, [], openai.error_body("missing or wrong bearer token", code="invalid_api_key")
            return 401, [], json.dumps({"error": "missing or wrong bearer token"}).encode()
        core = self.core
        method = request.method
        path = unquote(request.target.decode("latin-1").split("?", 1)[0])
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["v1"]:
            return await openai.route(core, method, parts, body)
        if parts[:2] == ["v2", "health"] and len(parts) == 3 and method == b"GET":
            ok = parts[2] == "live" or (parts[2] == "ready" and core.ready)
            if parts[2] not in ("live", "ready"):
                raise RouteNotFound(f"no route {path}")
            return (200 if ok else 503), [], b""
        if parts == ["v2"] and method == b"GET":
            metadata = core.server_metadata()
            metadata.extensions.append("binary_tensor_data")  # REST only: gRPC has raw contents instead
            return 200, [], _json(metadata)
        if parts[:2] != ["v2", "models"] or len(parts) < 3:
            raise RouteNotFound(f"no route {method.decode()} {path}")
        if parts == ["v2", "models", "stats"]:
            return 200, [], _json(core.model_statistics("", ""))
        name, rest, version = parts[2], parts[3:], ""
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "config", "stats", "infer"):
            raise RouteNotFound(f"no route {method.decode()} {path}")
        if action == "infer":
            if method != b"POST":
                raise RouteNotFound(f"{path} takes POST")
            length = headers.get(b"inference-header-content-length")
            try:
                header_length = int(length) if length is not None else None
            except ValueError:
                raise errors.InvalidInput(f"Inference-Header-Content-Length {length!r} is not a number") from None
            message, binary = parse_infer(body, header_length, name, version)
            answer, head_length = infer_answer(await core.infer(message), binary)
            extra = [] if head_length is None else [(b"inference-header-content-length", b"%d" % head_length)]
            return 200, extra, answer
        if method != b"GET":
            raise RouteNotFound(f"{path} takes GET")
        if action == "ready":
            return (200 if core.model_ready(name, version) else 400), [], b""
        if action == "config":
            return 200, [], _json(core.model_config(name, version).config)
        if action == "stats":
            return 200, [], _json(core.model_statistics(name, version))
        return 200, [], _metadata(core.model_metadata(name, version))
