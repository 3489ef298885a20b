"""Listening and shutdown shared by the asyncio frontends (``h2/server.py``, ``http/server.py``).

``AsyncioFrontend``: start (TLS 1.2+ from the settings' PEM files with the frontend's ALPN protocol, client
certificates required with ``--tls-ca``; the port shared between workers, ``SO_REUSEPORT``, when there are
several) and stop (open work gets ``grace_s``, then every connection is closed).
"""

from __future__ import annotations

import asyncio
import ssl

from tailmark.server.core import InferenceCore
from tailmark.server.settings import ServerSettings


def tls_context(settings: ServerSettings, alpn: str) -> ssl.SSLContext | None:
    """TLS 1.2+ offering ``alpn`` ("h2": gRPC clients insist on it; "http/1.1"); None without --tls-cert."""
    if settings.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    context.set_alpn_protocols([alpn])
    if settings.tls_ca is not None:
        context.load_verify_locations(settings.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class AsyncioFrontend:
    """``await start()`` -> port, ``await stop(grace_s)`` for a frontend of asyncio protocols, one per connection.

    A subclass names its ALPN protocol and says how a connection is made (``_connection``) and when stop has
    open work to wait for (``_pending``); ``_draining`` tells its connections that the server is stopping.
    Connections add themselves to ``connections`` and remove themselves when they close."""

    alpn: str

    def __init__(self, core: InferenceCore, settings: ServerSettings, port: int) -> None:
        self.core = core
        self.settings = settings
        self.requested_port = port  # 0: any free port
        self.auth_header = f"Bearer {settings.auth_token}".encode() if settings.auth_token else None
        self.connections: set = set()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    def _connection(self) -> asyncio.Protocol:
        raise NotImplementedError

    def _pending(self) -> bool:
        raise NotImplementedError

    def _draining(self) -> None:
        pass

    async def start(self) -> int:
        """Listen on ``settings.host``, plain or TLS per the settings, the port shared between workers when
        there are several; the port listened on."""
        self._server = await asyncio.get_running_loop().create_server(
            self._connection,
            self.settings.host,
            self.requested_port,
            ssl=tls_context(self.settings, self.alpn),
            reuse_port=self.settings.workers > 1 or None,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, give open work ``grace_s`` to finish, then close every connection."""
        if self._server is None:
            return
        self._server.close()
        self._draining()
        deadline = asyncio.get_running_loop().time() + grace_s
        while self._pending() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()
