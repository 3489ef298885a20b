"""The asyncio gRPC stack: grpc.aio on uvloop, one event loop, compute in model instance threads."""

from __future__ import annotations

import logging

import grpc

from tailmark.protos.service import HEALTH_CHECK, RPCS, SERVICE
from tailmark.server import security
from tailmark.server.core import InferenceCore
from tailmark.server.grpc_handlers import (
    bind,
    checked,
    control_rpcs,
    health_check,
    method_handler,
    status_of,
    stream_infer,
)
from tailmark.server.settings import ServerSettings

log = logging.getLogger(__name__)


class AioGrpcServer:
    """Lifecycle of one grpc.aio server: ``await start()`` binds and serves; ``await stop(grace)`` drains."""

    def __init__(self, core: InferenceCore, settings: ServerSettings) -> None:
        self.core = core
        self.settings = settings
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        settings = self.settings
        server = grpc.aio.server(
            options=settings.channel_options(),
            interceptors=security.interceptors(settings, aio=True),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        server.add_generic_rpc_handlers((self._service_handler(), self._health_handler()))
        self.port = bind(server, settings)
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace_s: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)

    def _service_handler(self) -> grpc.GenericRpcHandler:
        handlers = {name: method_handler(RPCS[name], _unary(fn)) for name, fn in control_rpcs(self.core).items()}
        handlers["ModelInfer"] = method_handler(RPCS["ModelInfer"], self._infer)
        handlers["ModelStreamInfer"] = method_handler(RPCS["ModelStreamInfer"], self._stream_infer)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _health_handler(self) -> grpc.GenericRpcHandler:
        check = method_handler(HEALTH_CHECK, _unary(lambda request: health_check(self.core, request)))
        return grpc.method_handlers_generic_handler(HEALTH_CHECK.service, {HEALTH_CHECK.name: check})

    async def _infer(self, request, context):
        try:
            return await self.core.infer(checked(request))
        except Exception as exc:
            await context.abort(*status_of(exc))

    async def _stream_infer(self, requests, context):
        async for response in stream_infer(self.core, requests):
            yield response


def _unary(fn):
    """An async handler running the cheap, non-blocking ``fn`` on the loop, errors mapped to statuses."""

    async def handle(request, context):
        try:
            return fn(checked(request))
        except Exception as exc:
            await context.abort(*status_of(exc))

    return handle
