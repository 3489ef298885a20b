"""Listening and shutdown shared by the asyncio frontends (``h2/server.py``, ``http/server.py``).

TLS 1.2+ from the settings' PEM files with the frontend's ALPN protocol (client certificates required
with ``--tls-ca``); the port shared between workers (``SO_REUSEPORT``) when there are several; on stop,
open work gets ``grace_s`` and then every connection is closed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable

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


async def listen(
    protocol_factory: Callable[[], asyncio.Protocol], settings: ServerSettings, port: int, *, alpn: str
) -> asyncio.Server:
    """Listen on ``settings.host``:``port`` (0: any free port), plain or TLS per the settings."""
    return await asyncio.get_running_loop().create_server(
        protocol_factory,
        settings.host,
        port,
        ssl=tls_context(settings, alpn),
        reuse_port=settings.workers > 1 or None,
        backlog=1024,
    )


async def close_after_grace(
    server: asyncio.Server, connections: Iterable, pending: Callable[[], bool], grace_s: float
) -> None:
    """Wait up to ``grace_s`` while ``pending()``, then close every connection and wait for ``server`` to close.

    Call after ``server.close()`` (and whatever the frontend tells its connections)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while pending() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for connection in list(connections):
        connection.close()
    await server.wait_closed()
