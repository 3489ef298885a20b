"""grpcio's side of the grpc.aio and sync stacks: method handlers, listening, and statuses as grpc.StatusCode.

The rest of what the stacks share (and the h2 frontend uses without grpcio) is in rpc_methods.py.
"""

from __future__ import annotations

import grpc

from tailmark.protos.service import Rpc
from tailmark.server import rpc_methods
from tailmark.server.rpc_methods import (  # noqa: F401 - the stacks import these from here
    STATUS_BY_ERROR,
    STREAM_IN_FLIGHT,
    MalformedRequest,
    UnknownService,
    checked,
    control_rpcs,
    health_check,
    lenient_parser,
    stream_answer,
    stream_error,
    stream_infer,
)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status (as grpc.StatusCode) and message a client sees for an exception raised while serving."""
    status, message = rpc_methods.status_of(exc)
    return grpc.StatusCode[status.name], message


def method_handler(rpc: Rpc, handle):
    """The grpc handler for ``rpc`` (unary or bidirectional stream), parsing requests leniently."""
    make = grpc.stream_stream_rpc_method_handler if rpc.streaming else grpc.unary_unary_rpc_method_handler
    return make(
        handle, request_deserializer=lenient_parser(rpc.request), response_serializer=rpc.response.SerializeToString
    )


def bind(server, settings) -> int:
    """Listen on the configured address (TLS when certificates are given); the bound port, OSError if none."""
    from tailmark.server import security

    address = f"{settings.host}:{settings.port}"
    credentials = security.server_credentials(settings)
    port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port
