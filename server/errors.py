"""Errors the server core raises; the gRPC layer maps each class to one status code.

ServerError
├── ModelNotFound      NOT_FOUND           unknown model or version
├── ModelUnavailable   UNAVAILABLE         known model that failed to load or is shutting down
├── InvalidInput       INVALID_ARGUMENT    request does not match the model's signature
├── Unsupported        INVALID_ARGUMENT    a feature the request asks for that we do not implement
├── Overloaded         RESOURCE_EXHAUSTED  queue full
├── RequestTimedOut    UNAVAILABLE         waited in the queue past its timeout (policy REJECT), as Triton
└── ModelFailed        INTERNAL            the model raised while executing
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error the core reports to a client."""


class ModelNotFound(ServerError):
    """The repository has no such model, or no such version of it."""

    def __init__(self, name: str, version: str = "") -> None:
        what = f"model {name!r}" + (f" version {version!r}" if version else "")
        super().__init__(f"{what} not found")


class ModelUnavailable(ServerError):
    """The model exists but cannot serve (load failure, shutdown)."""


class InvalidInput(ServerError):
    """The request's tensors do not match the model's inputs."""


class Unsupported(ServerError):
    """The request asks for something this server does not implement (e.g. shared memory)."""


class Overloaded(ServerError):
    """The model's queue is full; the request was rejected without running."""


class RequestTimedOut(ServerError):
    """The request's queue timeout expired before it ran (queue policy REJECT)."""


class ModelFailed(ServerError):
    """The model raised while executing the request."""
