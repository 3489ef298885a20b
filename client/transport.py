"""The transport seam: plain bytes and plain types in, no grpc object crosses it.

``GrpcTransport`` speaks KServe-v2 over grpc.aio (it must be created inside the running loop, and
used only from it). Inference requests arrive pre-serialised; responses come back as raw bytes, parsed
only when the caller asks (accuracy checks). ``NullTransport`` completes at once: it measures the
client's own ceiling, as LoadGen's null SUT does. ``MockTransport`` runs a handler, for tests.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tailmark.client.control import ControlRpcs, control_error
from tailmark.client.errors import ConfigError, Unreachable
from tailmark.protos.service import RPCS

INT32_MAX = 2**31 - 1


class RequestFailed(Exception):
    """One inference request failed; ``status`` is the gRPC status name (DEADLINE_EXCEEDED for timeouts)."""

    def __init__(self, status: str, message: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]  # as the server reports it; -1: variable (the batch dim included when batching)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    platform: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_batch_size: int  # 0: the model takes no batch dimension
    config_offered: bool = True  # False: the endpoint has no ModelConfig (KServe, MLServer); batching taken as none


class Transport(Protocol):
    async def infer(self, payload: bytes, timeout_s: float | None = None) -> bytes:
        """Send one serialised ModelInferRequest; return the serialised response or raise RequestFailed.

        ``timeout_s`` overrides the transport's per-request timeout (a trace's per-request deadline)."""
        ...

    async def model_info(self, model: str, version: str = "") -> ModelInfo: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: Path | None = None  # None: the system roots
    cert_file: Path | None = None  # client certificate, for mutual TLS
    key_file: Path | None = None

    def credentials(self):
        import grpc

        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read TLS file {path}: {exc.strerror}") from None

        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("mutual TLS needs both --tls-cert and --tls-key")
        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))

    def ssl_context(self, alpn: str) -> ssl.SSLContext:
        """A client context that offers ``alpn`` ("h2", "http/1.1"); ConfigError if the files cannot be loaded."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("mutual TLS needs both --tls-cert and --tls-key")
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS files: {exc}") from None
        context.set_alpn_protocols([alpn])
        return context


class GrpcTransport(ControlRpcs):
    """KServe-v2 over grpc.aio. Create with ``await GrpcTransport.connect(...)`` inside the running loop."""

    def __init__(self, channel, target: str, metadata: Sequence[tuple[str, str]], timeout_s: float) -> None:
        self._channel = channel
        self.target = target
        self._metadata = tuple(metadata) or None
        self._timeout = timeout_s or None
        # responses stay bytes: nothing is parsed on the hot path
        self._infer = channel.unary_unary(RPCS["ModelInfer"].path)
        import grpc

        self._grpc = grpc

    @classmethod
    async def connect(
        cls,
        target: str,
        *,
        tls: TlsSettings | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> GrpcTransport:
        """Open a channel and wait until it is connected; Unreachable/TlsError if it never is."""
        import grpc

        options = [("grpc.max_send_message_length", INT32_MAX), ("grpc.max_receive_message_length", INT32_MAX)]
        if tls is not None:
            channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        transport = cls(channel, target, metadata, timeout_s)
        try:
            await asyncio.wait_for(channel.channel_ready(), connect_timeout_s)
        except TimeoutError:
            await channel.close()
            hint = " (a TLS/plain-text mismatch looks like this too)" if tls is not None else ""
            raise Unreachable(f"cannot connect to {target} within {connect_timeout_s:g} s{hint}") from None
        return transport

    async def infer(self, payload: bytes, timeout_s: float | None = None) -> bytes:
        try:
            return await self._infer(payload, timeout=timeout_s or self._timeout, metadata=self._metadata)
        except self._grpc.aio.AioRpcError as exc:
            raise RequestFailed(exc.code().name, exc.details() or "") from None

    async def _control(self, name: str, request):
        rpc = RPCS[name]
        call = self._channel.unary_unary(
            rpc.path, request_serializer=rpc.request.SerializeToString, response_deserializer=rpc.response.FromString
        )
        try:
            return await call(request, timeout=self._timeout or 30.0, metadata=self._metadata)
        except self._grpc.aio.AioRpcError as exc:
            raise control_error(self.target, name, request, exc.code().name, exc.details() or "") from None

    async def aclose(self) -> None:
        await self._channel.close()


class NullTransport:
    """Completes every request at once, for calibrating the client's own ceiling."""

    def __init__(self, info: ModelInfo) -> None:
        self._info = info

    async def infer(self, payload: bytes, timeout_s: float | None = None) -> bytes:
        return b""

    async def model_info(self, model: str, version: str = "") -> ModelInfo:
        return self._info

    async def aclose(self) -> None:
        pass


class MockTransport(NullTransport):
    """Runs ``handler(payload)`` for each request (tests: delays, failures)."""

    def __init__(self, info: ModelInfo, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        super().__init__(info)
        self._handler = handler

    async def infer(self, payload: bytes, timeout_s: float | None = None) -> bytes:
        return await self._handler(payload)
