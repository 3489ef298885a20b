"""What every gRPC stack shares, without grpcio: the error → status table (tailmark.grpc_wire.status), lenient
request parsing, the control RPCs as plain functions and ModelStreamInfer on asyncio."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable

from google.protobuf.message import DecodeError

from tailmark.grpc_wire.status import Status
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.service import SERVICE
from tailmark.server import errors
from tailmark.server.core import InferenceCore
from tailmark.server.generative import kserve_stream


class MalformedRequest(errors.ServerError):
    """The request bytes are not a valid protobuf message of the RPC's type."""


class UnknownService(errors.ServerError):
    """A health check for a service this server does not offer."""


STATUS_BY_ERROR: dict[type[errors.ServerError], Status] = {
    errors.ModelNotFound: Status.NOT_FOUND,
    errors.ModelUnavailable: Status.UNAVAILABLE,
    errors.InvalidInput: Status.INVALID_ARGUMENT,
    errors.Unsupported: Status.INVALID_ARGUMENT,
    errors.Overloaded: Status.RESOURCE_EXHAUSTED,
    errors.RequestTimedOut: Status.UNAVAILABLE,
    errors.ModelFailed: Status.INTERNAL,
    UnknownService: Status.NOT_FOUND,
    MalformedRequest: Status.INVALID_ARGUMENT,
}


def lenient_parser(message_class):
    """A request deserializer that turns undecodable bytes into a ``MalformedRequest`` to report.

    gRPC's own handling of a deserializer failure is an opaque INTERNAL; a client that sent garbage
    deserves INVALID_ARGUMENT naming the message type.
    """
    name = message_class.DESCRIPTOR.name

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(f"malformed {name}: {exc}")

    return parse


def checked(request):
    """The request itself, or raise the MalformedRequest that the lenient parser left in its place."""
    if type(request) is MalformedRequest:
        raise request
    return request


def status_of(exc: BaseException) -> tuple[Status, str]:
    """The status and message a client sees for an exception raised while serving."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls], str(exc)
    return Status.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def control_rpcs(core: InferenceCore) -> dict[str, Callable]:
    """The cheap RPCs, each a function of the request message (they never block)."""
    return {
        "ServerLive": lambda r: pb.ServerLiveResponse(live=True),
        "ServerReady": lambda r: pb.ServerReadyResponse(ready=core.ready),
        "ModelReady": lambda r: pb.ModelReadyResponse(ready=core.model_ready(r.name, r.version)),
        "ServerMetadata": lambda r: core.server_metadata(),
        "ModelMetadata": lambda r: core.model_metadata(r.name, r.version),
        "ModelConfig": lambda r: core.model_config(r.name, r.version),
        "ModelStatistics": lambda r: core.model_statistics(r.name, r.version),
        "RepositoryIndex": lambda r: core.repository_index(r.ready),
    }


def health_check(core: InferenceCore, request: pb.HealthCheckRequest) -> pb.HealthCheckResponse:
    """grpc.health.v1 semantics: the whole server ("") or our service; anything else is NOT_FOUND."""
    if request.service not in ("", SERVICE):
        raise UnknownService(f"unknown service {request.service!r}")
    status = pb.HealthCheckResponse.SERVING if core.ready else pb.HealthCheckResponse.NOT_SERVING
    return pb.HealthCheckResponse(status=status)


def stream_answer(infer_response: pb.ModelInferResponse) -> pb.ModelStreamInferResponse:
    """A non-decoupled model's answer on a stream: flagged as its request's last, as Triton flags it."""
    response = pb.ModelStreamInferResponse(infer_response=infer_response)
    response.infer_response.parameters["triton_final_response"].bool_param = True
    return response


def stream_error(request, exc: BaseException) -> pb.ModelStreamInferResponse:
    """A failed request inside a stream: reported in-band, and the stream goes on (as Triton does)."""
    _, message = status_of(exc)
    if type(request) is MalformedRequest:
        return pb.ModelStreamInferResponse(error_message=message)
    return pb.ModelStreamInferResponse(
        error_message=message, infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id)
    )


STREAM_IN_FLIGHT = 512  # requests of one stream in service or awaiting their send; beyond it reading pauses


async def stream_infer(
    core: InferenceCore, requests: AsyncIterable, max_in_flight: int = STREAM_IN_FLIGHT
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """ModelStreamInfer on asyncio: requests run concurrently; each response goes out when it is ready
    (ids tie them together). ``requests`` yields messages, or MalformedRequest for undecodable ones.

    At most ``max_in_flight`` requests are read ahead of the responses sent: past that the reader waits,
    and HTTP/2 flow control holds the client back, so one stream's memory stays bounded."""
    # (response or None, whether it is its request's last): a generative model answers many (kserve_stream.py)
    responses: asyncio.Queue = asyncio.Queue(max_in_flight)
    tasks: set[asyncio.Task] = set()
    outstanding = 0  # requests read whose last response has not been yielded yet
    slots = asyncio.Semaphore(max_in_flight)

    async def run_one(request):
        if (generative := kserve_stream.generative_model(core, request)) is not None:
            async with contextlib.aclosing(kserve_stream.responses(request, generative)) as items:
                async for item in items:  # leaving early (the stream ended) cancels the sequence
                    await responses.put(item)
            return
        try:
            response = stream_answer(await core.infer(checked(request)))
        except Exception as exc:
            response = stream_error(request, exc)
        await responses.put((response, True))

    async def read_all():
        nonlocal outstanding
        async for request in requests:
            await slots.acquire()
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
            response, last = item
            if last:
                outstanding -= 1
                slots.release()
            if response is not None:
                yield response
    finally:
        reader.cancel()
        for task in tasks:
            task.cancel()
