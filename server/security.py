"""Transport security and authentication for both gRPC stacks.

- TLS: ``--tls-cert``/``--tls-key`` (PEM); with ``--tls-ca`` clients must present a certificate signed by
  that CA (mutual TLS).
- Bearer tokens: with ``--auth-token`` every RPC, health checks included, must carry the metadata
  ``authorization: Bearer <token>``; others get UNAUTHENTICATED before any handler runs. Tokens are
  compared in constant time.
"""

from __future__ import annotations

import hmac

import grpc

from tailmark.server.settings import UNAUTHENTICATED_MESSAGE as UNAUTHENTICATED
from tailmark.server.settings import ServerSettings


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files, or None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    ca = settings.tls_ca.read_bytes() if settings.tls_ca is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def _token_ok(metadata, expected: bytes) -> bool:
    for key, value in metadata or ():
        if key == "authorization":
            given = value.encode() if isinstance(value, str) else value
            return hmac.compare_digest(given, expected)
    return False


def _deny(details: str):
    def abort(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, details)

    return abort


async def _deny_async(request, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)


def _denied_handler(handler: grpc.RpcMethodHandler | None, behaviour):
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""
    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        factory = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        factory = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        factory = grpc.unary_stream_rpc_method_handler
    else:
        factory = grpc.unary_unary_rpc_method_handler
    return factory(behaviour, request_deserializer=None, response_serializer=None)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Sync-stack interceptor: pass the call on only with the right token."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        if _token_ok(handler_call_details.invocation_metadata, self._expected):
            return continuation(handler_call_details)
        return _denied_handler(continuation(handler_call_details), _deny(UNAUTHENTICATED))


class AsyncBearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """grpc.aio interceptor with the same rule."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if _token_ok(handler_call_details.invocation_metadata, self._expected):
            return handler
        return _denied_handler(handler, _deny_async)


def interceptors(settings: ServerSettings, *, aio: bool) -> tuple:
    if not settings.auth_token:
        return ()
    return ((AsyncBearerTokenInterceptor if aio else BearerTokenInterceptor)(settings.auth_token),)
