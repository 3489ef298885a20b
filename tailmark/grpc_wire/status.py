"""gRPC status codes (google.rpc.Code) as one enum for both ends, and how HTTP/2 outcomes map onto them.

The h2 path uses these instead of ``grpc.StatusCode`` so that it never imports grpcio.
"""

from __future__ import annotations

import enum

from tailmark.http2 import frames


class Status(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def status_name(code: int) -> str:
    """The name of a status number; UNKNOWN for numbers outside the table (as gRPC does)."""
    try:
        return Status(code).name
    except ValueError:
        return "UNKNOWN"


# gRPC's mapping of HTTP statuses that are not 200 (doc/http-grpc-status-mapping.md)
HTTP_STATUS = {
    "400": Status.INTERNAL,
    "401": Status.UNAUTHENTICATED,
    "403": Status.PERMISSION_DENIED,
    "404": Status.UNIMPLEMENTED,
    "429": Status.UNAVAILABLE,
    "502": Status.UNAVAILABLE,
    "503": Status.UNAVAILABLE,
    "504": Status.UNAVAILABLE,
}

# a stream reset by the peer, by its HTTP/2 error code (PROTOCOL.md "Errors")
RESET_STATUS = {
    frames.NO_ERROR: Status.INTERNAL,
    frames.CANCEL: Status.CANCELLED,
    frames.REFUSED_STREAM: Status.UNAVAILABLE,
    frames.ENHANCE_YOUR_CALM: Status.RESOURCE_EXHAUSTED,
}
