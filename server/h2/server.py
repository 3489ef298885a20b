"""Lifecycle of the h2 frontend: listen (plain or TLS with ALPN "h2"), serve, drain on stop."""

from __future__ import annotations

import asyncio

from tailmark.server.core import InferenceCore
from tailmark.server.h2.calls import routes
from tailmark.server.h2.connection import Connection
from tailmark.server.listen import close_after_grace, listen
from tailmark.server.settings import ServerSettings


class H2GrpcServer:
    """Same interface as AioGrpcServer: ``await start()`` → port, ``await stop(grace)``."""

    def __init__(self, core: InferenceCore, settings: ServerSettings) -> None:
        self.core = core
        self.settings = settings
        self.routes = routes(core)
        self.max_message_bytes = settings.max_message_bytes
        self.max_concurrent_rpcs = settings.max_concurrent_rpcs
        self.auth_header = f"Bearer {settings.auth_token}".encode() if settings.auth_token else None
        self.active = 0  # calls admitted and not finished, over all connections
        self.connections: set[Connection] = set()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await listen(lambda: Connection(self), self.settings, self.settings.port, alpn="h2")
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, send GOAWAY, give open calls ``grace_s`` to finish, then close what is left."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.drain()
        await close_after_grace(self._server, self.connections, lambda: bool(self.connections), grace_s)
