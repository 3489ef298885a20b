"""The gRPC methods as the h2 frontend runs them: message bytes in, a ``Call`` (response or status) out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

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
