"""Lifecycle of the h2 frontend: listen (plain or TLS with ALPN "h2"), serve, drain on stop."""

from __future__ import annotations

import asyncio
import ssl

from tailmark.server.core import InferenceCore
from tailmark.server.h2.calls import routes
from tailmark.server.h2.connection import Connection
from tailmark.server.settings import ServerSettings


def tls_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """TLS 1.2+ with ALPN h2 (gRPC clients insist on it); client certificates required with --tls-ca."""
    if settings.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    context.set_alpn_protocols(["h2"])
    if settings.tls_ca is not None:
        context.load_verify_locations(settings.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


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
        settings = self.settings
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self),
            settings.host,
            settings.port,
            ssl=tls_context(settings),
            reuse_port=settings.workers > 1 or None,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, send GOAWAY, give open calls ``grace_s`` to finish, then close what is left."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.drain()
        deadline = asyncio.get_running_loop().time() + grace_s
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()
