"""KServe-v2 over HTTP/1.1 REST (``--transport http``, target ``http://HOST:PORT`` or ``https://``).

The hot path still receives a pre-serialised ModelInferRequest and returns a ModelInferResponse's bytes, so
the response check, accuracy mode and every scenario work unchanged. Each distinct request payload is
converted once into its REST form (kept in a bounded cache keyed by the payload bytes): with Triton's binary
tensor extension by default (a JSON header whose inputs carry ``binary_data_size``, then the raw tensors;
``Inference-Header-Content-Length``; outputs asked for in binary), or as JSON tensors (``json_tensors``,
``--http-json``: KServe's and MLServer's plain v2 REST). An answer's JSON header is turned into the response
protobuf once per distinct header; its binary outputs are appended as ``raw_output_contents`` fields
(the conversions: client/http_rest.py).

HTTP/1.1 carries one request per connection at a time. ``connections`` keep-alive connections are opened
up front; when all are busy another is opened rather than queueing the request inside the client (a queue
here would add to latency without showing as send lag), and every connection opened is kept alive.

The HTTP layer is h11 (sans-IO) under an asyncio protocol of our own. Chosen by measuring
(bench/http_client_choice.py: closed loop against a near-free local server in another process, one
keep-alive connection per request in flight, shared 2-core VM, uvloop), client CPU µs per request and
requests/s::

                 1 KiB, 1 in flight   1 KiB, 16 in flight   600 KiB, 1     600 KiB, 16
    h11          98 µs   7,700/s      87 µs   9,200/s       525 µs  760/s  545 µs  1,030/s
    aiohttp     126 µs   6,650/s      96 µs   9,260/s       856 µs  565/s  780 µs  1,070/s
    httpx       894 µs   1,070/s    1,690 µs    580/s     2,230 µs  330/s  3,060 µs   325/s

aiohttp (read buffer raised to 1 MiB; its 64 KiB default costs more on large bodies) is close on small
bodies; h11 spends less CPU on large ones, has no dependencies and leaves connection handling to us, which
the timeout (close the connection: HTTP/1.1 cannot cancel one request) and pool rules above need.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Sequence
from typing import Self
from urllib.parse import quote, urlsplit

import h11

from tailmark.client.control import ControlRpcs, control_error
from tailmark.client.errors import ConfigError, TlsError, Unreachable
from tailmark.client.http_rest import ResponseConverter, rest_request
from tailmark.client.transport import RequestFailed, TlsSettings
from tailmark.protos import inference_pb2 as pb
from tailmark.protos import model_config_pb2

# HTTP status -> the gRPC status name the same failure has on the gRPC path
STATUS_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    413: "RESOURCE_EXHAUSTED",
    422: "INVALID_ARGUMENT",  # FastAPI's validation error (MLServer, KServe)
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
REQUESTS_CACHED = 4096  # distinct payloads whose REST form is kept
MAX_EVENT_BYTES = 1 << 20  # h11's limit on one response head


def status_name(http_status: int) -> str:
    return STATUS_BY_HTTP.get(http_status, "INTERNAL" if http_status >= 500 else "UNKNOWN")


# --- one HTTP/1.1 connection ---


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; ``future`` gets (status, headers, body)."""

    def __init__(self, pool: list[_Connection]) -> None:
        self._pool = pool  # the idle list it returns itself to after a complete answer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_EVENT_BYTES)
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future | None = None
        self.closed = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self.answered = 0  # complete answers so far: a reused connection may have been closed by an idle timer
        self.heard = False  # bytes of the current answer arrived
        self.on_data = None  # streaming: a 200 answer's body pieces go here as they arrive, not into the body

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self in self._pool:
            self._pool.remove(self)
        self._fail("UNAVAILABLE", f"connection lost: {exc}" if exc else "connection closed by the server")

    def send(self, request: h11.Request, body: bytes, on_data=None) -> asyncio.Future:
        self.future = asyncio.get_running_loop().create_future()
        self._chunks = []
        self.heard = False
        self.on_data = on_data
        send = self.h11.send
        # one writev for head, body and end: three writes cost three syscalls (~30 µs per request)
        if body:
            self.transport.writelines((send(request), send(h11.Data(data=body)), send(h11.EndOfMessage())))
        else:
            self.transport.write(send(request) + send(h11.EndOfMessage()))
        return self.future

    def data_received(self, data: bytes) -> None:
        self.heard = True
        try:
            self.h11.receive_data(data)
            while True:
                event = self.h11.next_event()
                kind = type(event)
                if event is h11.NEED_DATA:
                    return
                if kind is h11.Data:
                    if self.on_data is not None and self._status == 200:
                        self.on_data(event.data)
                    else:
                        self._chunks.append(event.data)
                elif kind is h11.Response:
                    self._status, self._headers = event.status_code, event.headers
                elif kind is h11.EndOfMessage:
                    self._complete()
                    return
                elif kind is h11.ConnectionClosed:
                    self.abandon()
                    return
        except h11.RemoteProtocolError as exc:
            self._fail("INTERNAL", f"malformed HTTP answer: {exc}")
            self.abandon()

    def _complete(self) -> None:
        future, self.future = self.future, None
        body = b"".join(self._chunks)  # bytes even when h11 hands over one bytearray
        self._chunks = []
        self.answered += 1
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self._pool.append(self)
        else:  # the server closes after this answer
            self.abandon()
        if future is not None and not future.done():
            future.set_result((self._status, self._headers, body))

    def _fail(self, status: str, message: str) -> None:
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_exception(RequestFailed(status, message))

    def expire(self) -> None:
        """The request ran past its deadline: HTTP/1.1 cannot cancel it, so the connection goes."""
        self._fail("DEADLINE_EXCEEDED", "deadline exceeded")
        self.abandon()

    def abandon(self) -> None:
        """Drop the connection now: abort, not close, which would first write out the rest of a large request
        no one waits for (and, if the event loop ends first, leave the socket open: real Triton then waited
        its 30 s exit timeout for that connection)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def parse_target(target: str, tls: TlsSettings | None) -> tuple[str, int, bool]:
    """``http://host:port``, ``https://host:port`` or ``host:port`` -> (host, port, use TLS)."""
    if "://" not in target:
        target = ("https://" if tls is not None else "http://") + target
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--target {target!r}: expected http://HOST:PORT or https://HOST:PORT")
    if parts.scheme == "http" and tls is not None:
        raise ConfigError(f"--target {target!r} is plain http but TLS options were given: use https://")
    secure = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if secure else 80), secure


class HttpTransport(ControlRpcs):
    """KServe-v2 REST over keep-alive HTTP/1.1. Create with ``await HttpTransport.connect(...)``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        metadata: Sequence[tuple[str, str]],
        timeout_s: float,
        json_tensors: bool = False,
    ) -> None:
        self.target = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        self._host, self._port, self._ssl = host, port, ssl_context
        self._base_headers = [("host", f"{host}:{port}"), *((k.lower(), v) for k, v in metadata)]
        self._timeout = timeout_s or None
        self.json_tensors = json_tensors
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._requests: dict[bytes, h11.Request | tuple[h11.Request, bytes]] = {}
        self._convert = ResponseConverter()
        self.connections_opened = 0
        self.retries = 0  # requests sent again after a reused connection closed under them

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
        **options,
    ) -> Self:
        """Open ``connections`` keep-alive connections; Unreachable/TlsError if they cannot be. ``options`` go to
        the constructor (``json_tensors`` here; a subclass's own, e.g. the OpenAI transport's ``api``)."""
        host, port, secure = parse_target(target, tls)
        context = (tls or TlsSettings()).ssl_context("http/1.1") if secure else None
        transport = cls(host, port, ssl_context=context, metadata=metadata, timeout_s=timeout_s, **options)
        try:
            for _ in range(connections):
                transport._idle.append(await transport._open(connect_timeout_s))
        except BaseException:
            await transport.aclose()
            raise
        return transport

    async def _open(self, timeout_s: float = 10.0) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self._idle),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                timeout_s,
            )
        except ssl.SSLError as exc:
            raise TlsError(f"TLS with {self.target} failed: {exc}") from None
        except TimeoutError:
            hint = " (a TLS/plain-text mismatch looks like this too)" if self._ssl else ""
            raise Unreachable(f"cannot connect to {self.target} within {timeout_s:g} s{hint}") from None
        except OSError as exc:
            raise Unreachable(f"cannot connect to {self.target}: {exc.strerror or exc}") from None
        self._all.add(connection)
        self.connections_opened += 1
        return connection

    def _request_for(self, payload: bytes) -> tuple[h11.Request, bytes]:
        path, body, header_length = rest_request(payload, json_tensors=self.json_tensors)
        headers = [
            *self._base_headers,
            ("content-type", "application/json" if header_length is None else "application/octet-stream"),
            ("content-length", str(len(body))),
        ]
        if header_length is not None:
            headers.append(("inference-header-content-length", str(header_length)))
        built = (h11.Request(method="POST", target=path, headers=headers), body)
        if len(self._requests) >= REQUESTS_CACHED:
            self._requests.pop(next(iter(self._requests)))
        self._requests[payload] = built
        return built

    async def _exchange(
        self, request: h11.Request, body: bytes, timeout_s: float | None, retry: bool = True, on_data=None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request and its answer. A reused keep-alive connection that the server closed as the request
        went out (its idle timeout: uvicorn's is 5 s) fails before any byte of an answer: that request is
        sent once more on a fresh connection, as HTTP clients do; the server never saw it."""
        idle = self._idle
        connection = idle.pop() if idle else None
        while connection is not None and connection.closed:
            connection = idle.pop() if idle else None
        if connection is None:
            try:
                connection = await self._open()
            except (Unreachable, TlsError) as exc:
                raise RequestFailed("UNAVAILABLE", str(exc)) from None
        future = connection.send(request, body, on_data)
        timer = asyncio.get_running_loop().call_later(timeout_s, connection.expire) if timeout_s else None
        try:
            return await future
        except asyncio.CancelledError:
            connection.abandon()  # the answer would arrive on a connection no one reads
            raise
        except RequestFailed as exc:
            if not (retry and exc.status == "UNAVAILABLE" and connection.answered and not connection.heard):
                raise
        finally:
            if timer is not None:
                timer.cancel()
            if connection.closed:
                self._all.discard(connection)
        self.retries += 1
        return await self._exchange(request, body, timeout_s, retry=False, on_data=on_data)

    async def infer(self, payload: bytes, timeout_s: float | None = None) -> bytes:
        request, body = self._requests.get(payload) or self._request_for(payload)
        status, headers, answer = await self._exchange(request, body, timeout_s or self._timeout)
        if status != 200:
            raise RequestFailed(status_name(status), _error_message(answer))
        header_length = None
        for name, value in headers:
            if name == b"inference-header-content-length":
                header_length = int(value)
                break
        try:
            return self._convert(answer, header_length)
        except (ValueError, KeyError, TypeError) as exc:
            raise RequestFailed("INTERNAL", f"malformed REST answer: {exc}") from None

    # --- control calls: ControlRpcs' names, served by the REST routes ---

    async def _get(self, path: str) -> tuple[int, bytes]:
        request = h11.Request(method="GET", target=path, headers=self._base_headers)
        try:
            status, _, body = await self._exchange(request, b"", self._timeout or 30.0)
        except RequestFailed as exc:
            raise Unreachable(f"{self.target} is unavailable: {exc.message}") from None
        return status, body

    async def _control(self, name: str, request):
        if name == "ServerReady":
            status, _ = await self._get("/v2/health/ready")
            return pb.ServerReadyResponse(ready=status == 200)
        model = f"/v2/models/{quote(request.name, safe='')}"
        if getattr(request, "version", ""):
            model += f"/versions/{quote(request.version, safe='')}"
        path = {"ModelMetadata": model, "ModelConfig": f"{model}/config", "ModelStatistics": f"{model}/stats"}[name]
        status, body = await self._get(path)
        if status != 200:
            code = status_name(status)
            if name != "ModelMetadata" and status in (404, 405):  # the route itself is missing (KServe, MLServer)
                code = "UNIMPLEMENTED"
            raise control_error(self.target, name, request, code, _error_message(body))
        try:
            document = json.loads(body)
            if name == "ModelMetadata":
                return _metadata(document)
            if name == "ModelConfig":
                return pb.ModelConfigResponse(config=_config(document.get("config", document)))
            return _statistics(document)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise control_error(self.target, name, request, "INTERNAL", f"malformed answer: {exc}") from None

    async def aclose(self) -> None:
        for connection in list(self._all):
            connection.abandon()
        self._all.clear()
        self._idle.clear()


def _error_message(body: bytes) -> str:
    try:
        document = json.loads(body)
        if isinstance(document, dict) and "error" in document:
            return str(document["error"])
        if isinstance(document, dict) and "detail" in document:  # FastAPI (MLServer, KServe)
            return str(document["detail"])
    except ValueError:
        pass
    return body[:500].decode("utf-8", errors="replace")


def _metadata(document: dict) -> pb.ModelMetadataResponse:
    def tensors(items):
        return [
            pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            for t in items or ()
        ]

    return pb.ModelMetadataResponse(
        name=document["name"],
        versions=[str(v) for v in document.get("versions") or ()],
        platform=document.get("platform", ""),
        inputs=tensors(document.get("inputs")),
        outputs=tensors(document.get("outputs")),
    )


def _config(document: dict) -> model_config_pb2.ModelConfig:
    from google.protobuf import json_format

    try:
        return json_format.ParseDict(document, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
    except json_format.ParseError:  # a field this proto spells differently: batching is what the run needs
        return model_config_pb2.ModelConfig(
            name=document.get("name", ""), max_batch_size=int(document.get("max_batch_size", 0))
        )


def _statistics(document: dict) -> pb.ModelStatisticsResponse:
    from google.protobuf import json_format

    return json_format.ParseDict(document, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)
