"""The gRPC methods as the h2 frontend runs them (message bytes in, a ``Call`` out), how a request's headers
are admitted, and the state of one call on one stream (``GrpcCall``)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

from tailmark.grpc_wire.messages import MessageError, MessageReader, encoding_wbits
from tailmark.grpc_wire.metadata import BadMetadata, parse_timeout
from tailmark.grpc_wire.status import Status
from tailmark.protos.service import HEALTH_CHECK, RPCS, Rpc
from tailmark.server.core import InferenceCore
from tailmark.server.rpc_methods import (
    MalformedRequest,
    checked,
    control_rpcs,
    health_check,
    lenient_parser,
    status_of,
    stream_infer,
)
from tailmark.server.settings import UNAUTHENTICATED_MESSAGE


class Call(NamedTuple):
    """How a unary call ended: the serialised response, or (gRPC status code, message)."""

    response: bytes = b""
    error: tuple[int, str] | None = None


class Route(NamedTuple):
    """One method: ``call(message)`` for unary ones (a Call, or an awaitable of one when it has to wait);
    ``stream(requests)`` (serialised messages in and out) for bidirectional streams."""

    call: Callable | None = None
    stream: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None

    @property
    def streaming(self) -> bool:
        return self.stream is not None


def status_code(exc: BaseException) -> tuple[int, str]:
    code, message = status_of(exc)
    return int(code), message


def _unary(rpc: Rpc, fn) -> Callable[[bytes], Call]:
    """A cheap, non-blocking method run where the message arrives."""
    parse = lenient_parser(rpc.request)

    def call(message: bytes) -> Call:
        try:
            return Call(fn(checked(parse(message))).SerializeToString())
        except Exception as exc:
            return Call(error=status_code(exc))

    return call


def _infer(core: InferenceCore):
    parse = lenient_parser(RPCS["ModelInfer"].request)

    async def run(request) -> Call:
        try:
            response = await core.infer(request)
        except Exception as exc:
            return Call(error=status_code(exc))
        return Call(response.SerializeToString())

    def call(message: bytes):
        request = parse(message)
        if type(request) is MalformedRequest:
            return Call(error=status_code(request))
        return run_eagerly(run(request))

    return call


def _stream(core: InferenceCore):
    parse = lenient_parser(RPCS["ModelStreamInfer"].request)

    async def parsed(messages: AsyncIterator[bytes]):
        async for message in messages:
            yield parse(message)  # a MalformedRequest is answered in-band, as on the other stacks

    async def stream(messages: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for response in stream_infer(core, parsed(messages)):
            yield response.SerializeToString()

    return stream


def routes(core: InferenceCore) -> dict[str, Route]:
    """Every method this server answers, by its HTTP/2 path."""
    table = {RPCS[name].path: Route(call=_unary(RPCS[name], fn)) for name, fn in control_rpcs(core).items()}
    table[RPCS["ModelInfer"].path] = Route(call=_infer(core))
    table[RPCS["ModelStreamInfer"].path] = Route(stream=_stream(core))
    table[HEALTH_CHECK.path] = Route(call=_unary(HEALTH_CHECK, lambda request: health_check(core, request)))
    return table


def run_eagerly(coro):
    """Run ``coro`` until it first has to wait: its result if it never does (no Task is made), otherwise an
    awaitable of the rest. Cheap models answer inside ``data_received``; Python 3.12's eager tasks do the same.
    """
    try:
        waiting = coro.send(None)
    except StopIteration as done:
        return done.value
    return _resume(coro, waiting)


async def _resume(coro, waiting):
    """Drive the rest of ``coro`` from this task: what it awaited is awaited here, and the outcome passed on
    (an exception, our own cancellation included, is thrown in where the coroutine waits)."""
    while True:
        error = None
        try:
            if waiting is None:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False  # taken over, as a Task does with a yielded future
                await waiting
        except BaseException as exc:
            error = exc
        try:
            waiting = coro.send(None) if error is None else coro.throw(error)
        except StopIteration as done:
            return done.value


NOT_GRPC = object()  # a request that is not gRPC at all: HTTP 415


def admit(server, headers: dict[str, str]) -> tuple:
    """What a request's headers decide, before any of its body: (headers, refusal, route, wbits, timeout), where
    refusal is None (admitted), NOT_GRPC (HTTP 415) or (status, message) to end the call with."""
    if headers.get(":method") != "POST":
        return headers, (Status.UNIMPLEMENTED, f"gRPC needs POST, not {headers.get(':method')!r}"), None, None, None
    if not headers.get("content-type", "").startswith("application/grpc"):
        return headers, NOT_GRPC, None, None, None
    if server.auth_header is not None:
        given = headers.get("authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, server.auth_header):
            return headers, (Status.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE), None, None, None
    path = headers.get(":path", "")
    route = server.routes.get(path)
    if route is None:
        return headers, (Status.UNIMPLEMENTED, f"unknown method {path}"), None, None, None
    try:
        wbits = encoding_wbits(headers.get("grpc-encoding"))
        timeout = parse_timeout(headers.get("grpc-timeout"))
    except (MessageError, BadMetadata) as exc:
        return headers, (exc.status, str(exc)), None, None, None
    return headers, None, route, wbits, timeout


class GrpcCall:
    """One call on one stream: its route, message reader and, while it runs, its task and deadline."""

    __slots__ = (
        "done",
        "headers_sent",
        "held",
        "messages",
        "reader",
        "requests",
        "route",
        "stream",
        "task",
        "timer",
    )

    def __init__(self, stream) -> None:
        self.stream = stream
        self.route: Route | None = None  # None: answered before its body arrived
        self.reader: MessageReader | None = None
        self.messages: list = []  # a unary call's messages
        self.requests: asyncio.Queue | None = None  # a streaming call's messages, as they complete
        self.headers_sent = False
        self.held = 0  # request bytes of it counted against the connection's Limits.max_buffered_input
        self.done = False  # ended (status queued), or reset
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
