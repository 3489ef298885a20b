"""The thread-per-RPC gRPC stack: grpc.server with a thread pool; each RPC runs the core blocking."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from tailmark.protos.service import HEALTH_CHECK, RPCS, SERVICE
from tailmark.server import security
from tailmark.server.core import InferenceCore
from tailmark.server.generative import kserve_stream
from tailmark.server.grpc_handlers import (
    STREAM_IN_FLIGHT,
    bind,
    checked,
    control_rpcs,
    health_check,
    method_handler,
    status_of,
    stream_answer,
    stream_error,
)
from tailmark.server.settings import ServerSettings


class SyncGrpcServer:
    """Same surface as AioGrpcServer, blocking: ``start()``, ``stop(grace)``, ``wait()``."""

    def __init__(self, core: InferenceCore, settings: ServerSettings) -> None:
        self.core = core
        self.settings = settings
        self.port = 0
        self._pool = ThreadPoolExecutor(settings.sync_threads, thread_name_prefix="grpc")
        self._server: grpc.Server | None = None

    def start(self) -> int:
        settings = self.settings
        server = grpc.server(
            self._pool,
            options=settings.channel_options(),
            interceptors=security.interceptors(settings, aio=False),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        server.add_generic_rpc_handlers((self._service_handler(), self._health_handler()))
        self.port = bind(server, settings)
        server.start()
        self._server = server
        return self.port

    def stop(self, grace_s: float) -> None:
        if self._server is not None:
            self._server.stop(grace_s).wait()
        self._pool.shutdown(wait=False)

    def _service_handler(self) -> grpc.GenericRpcHandler:
        handlers = {name: method_handler(RPCS[name], _unary(fn)) for name, fn in control_rpcs(self.core).items()}
        handlers["ModelInfer"] = method_handler(RPCS["ModelInfer"], _unary(self.core.infer_blocking))
        handlers["ModelStreamInfer"] = method_handler(RPCS["ModelStreamInfer"], self._stream_infer)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _health_handler(self) -> grpc.GenericRpcHandler:
        check = method_handler(HEALTH_CHECK, _unary(lambda request: health_check(self.core, request)))
        return grpc.method_handlers_generic_handler(HEALTH_CHECK.service, {HEALTH_CHECK.name: check})

    def _stream_infer(self, requests, context):
        """Responses are yielded in completion order; a reader thread feeds requests to the pool, at most
        STREAM_IN_FLIGHT ahead of the answers sent (then it waits and HTTP/2 flow control holds the client back),
        so one stream's memory stays bounded as on the asyncio stacks."""
        done: queue.Queue = queue.Queue()
        slots = threading.BoundedSemaphore(STREAM_IN_FLIGHT)
        count = {"read": 0}
        cancels: list = []  # of the generative requests: the stream's end stops them (kserve_stream.py)
        context.add_callback(lambda: [cancel() for cancel in list(cancels)])

        def run_one(request):
            try:
                done.put((stream_answer(self.core.infer_blocking(checked(request))), True))
            except Exception as exc:
                done.put((stream_error(request, exc), True))

        def read_all():
            try:
                for request in requests:
                    while not slots.acquire(timeout=0.5):
                        if not context.is_active():  # the stream ended while this one waited for a slot
                            return
                    count["read"] += 1
                    if (generative := kserve_stream.generative_model(self.core, request)) is not None:
                        cancels.append(kserve_stream.start_on_generation_loop(request, generative, done.put).cancel)
                    else:
                        self._pool.submit(run_one, request)
            except grpc.RpcError:  # the client cancelled the call or went away: no more requests
                pass
            finally:
                done.put(None)

        threading.Thread(target=read_all, daemon=True).start()
        written, input_done = 0, False
        while not (input_done and written == count["read"]):
            try:
                item = done.get(timeout=0.5)
            except queue.Empty:
                if not context.is_active():  # cancelled: nobody is left to answer, and the RPC thread is freed
                    return
                continue
            if item is None:
                input_done = True
                continue
            response, last = item  # a generative request answers many; its last one ends it
            written += last
            if last:
                slots.release()
            if response is not None:
                yield response


def _unary(fn):
    """A handler running ``fn`` in the RPC's thread, errors mapped to statuses."""

    def handle(request, context):
        try:
            return fn(checked(request))
        except Exception as exc:
            context.abort(*status_of(exc))

    return handle
