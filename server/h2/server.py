"""Lifecycle of the h2 frontend: listen (plain or TLS with ALPN "h2"), serve, drain on stop."""

from __future__ import annotations

from tailmark.server.core import InferenceCore
from tailmark.server.h2.calls import routes
from tailmark.server.h2.connection import H2Protocol
from tailmark.server.listen import AsyncioFrontend
from tailmark.server.settings import ServerSettings

MAX_INFLATED_BYTES = 32 << 20


class H2GrpcServer(AsyncioFrontend):
    """Same interface as AioGrpcServer: ``await start()`` → port, ``await stop(grace)``."""

    alpn = "h2"  # gRPC clients insist on it

    def __init__(self, core: InferenceCore, settings: ServerSettings) -> None:
        super().__init__(core, settings, settings.port)
        self.routes = routes(core)
        self.max_message_bytes = settings.max_message_bytes
        self.max_concurrent_rpcs = settings.max_concurrent_rpcs
        # a compressed message inflates to at most this (gzip bombs); raw messages only have max_message_bytes
        self.max_inflated_bytes = MAX_INFLATED_BYTES
        self.h2_limits = settings.h2_limits
        self.active = 0  # calls admitted and not finished, over all connections

    def _connection(self) -> H2Protocol:
        return H2Protocol(self)

    def _draining(self) -> None:
        """Send GOAWAY on every connection; stop then waits until they have all gone (or ``grace_s``)."""
        for connection in list(self.connections):
            connection.drain()

    def _pending(self) -> bool:
        return bool(self.connections)
