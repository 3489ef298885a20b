"""The asyncio gRPC stack: grpc.aio on uvloop, one event loop, compute in model instance threads."""

from __future__ import annotations

import asyncio
import logging

import grpc

from tailmark.protos import inference_pb2 as pb
from tailmark.protos.service import HEALTH_SERVICE, RPCS, SERVICE
from tailmark.server import security
from tailmark.server.core import InferenceCore
from tailmark.server.grpc_handlers import (
    bind,
    checked,
    control_rpcs,
    health_check,
    lenient_parser,
    status_of,
    stream_error,
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

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    def _service_handler(self) -> grpc.GenericRpcHandler:
        handlers = {name: self._unary(fn, name) for name, fn in control_rpcs(self.core).items()}
        handlers["ModelInfer"] = self._unary_infer()
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self._stream_infer,
            request_deserializer=lenient_parser(pb.ModelInferRequest),
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _health_handler(self) -> grpc.GenericRpcHandler:
        async def check(request, context):
            try:
                return health_check(self.core, checked(request))
            except Exception as exc:
                await context.abort(*status_of(exc))

        handler = grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=lenient_parser(pb.HealthCheckRequest),
            response_serializer=pb.HealthCheckResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(HEALTH_SERVICE, {"Check": handler})

    @staticmethod
    def _unary(fn, name: str):
        rpc = RPCS[name]

        async def handle(request, context):
            try:
                return fn(checked(request))
            except Exception as exc:
                await context.abort(*status_of(exc))

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=lenient_parser(rpc.request), response_serializer=rpc.response.SerializeToString
        )

    def _unary_infer(self):
        infer = self.core.infer

        async def handle(request, context):
            try:
                return await infer(checked(request))
            except Exception as exc:
                await context.abort(*status_of(exc))

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=lenient_parser(pb.ModelInferRequest),
            response_serializer=pb.ModelInferResponse.SerializeToString,
        )

    async def _stream_infer(self, requests, context):
        """Requests run concurrently; each response is written when it is ready (ids tie them together)."""
        responses: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()
        outstanding = 0  # requests read whose response has not been yielded yet

        async def run_one(request):
            try:
                response = pb.ModelStreamInferResponse(infer_response=await self.core.infer(checked(request)))
            except Exception as exc:
                response = stream_error(request, exc)
            await responses.put(response)

        async def read_all():
            nonlocal outstanding
            async for request in requests:
                outstanding += 1
                task = asyncio.ensure_future(run_one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await responses.put(None)  # end of input

        reader = asyncio.ensure_future(read_all())
        try:
            input_done = False
            while not (input_done and outstanding == 0):
                item = await responses.get()
                if item is None:
                    input_done = True
                    continue
                outstanding -= 1
                yield item
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()
