"""What both gRPC stacks share: the error → status table and the control RPCs as plain functions."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.service import SERVICE
from tailmark.server import errors
from tailmark.server.core import InferenceCore


class UnknownService(errors.ServerError):
    """A health check for a service this server does not offer."""


STATUS_BY_ERROR: dict[type[errors.ServerError], grpc.StatusCode] = {
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unsupported: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ModelFailed: grpc.StatusCode.INTERNAL,
    UnknownService: grpc.StatusCode.NOT_FOUND,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a client sees for an exception raised while serving."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls], str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


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


def stream_error(request: pb.ModelInferRequest, exc: BaseException) -> pb.ModelStreamInferResponse:
    """A failed request inside a stream: reported in-band, and the stream goes on (as Triton does)."""
    _, message = status_of(exc)
    return pb.ModelStreamInferResponse(
        error_message=message, infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id)
    )
