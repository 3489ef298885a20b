"""The control RPCs every transport offers on top of its ``_control(name, request)``, and their errors."""

from __future__ import annotations

from tailmark.client.errors import ModelNotFound, ServerRejected, TlsError, Unreachable
from tailmark.protos import inference_pb2 as pb


class ControlRpcs:
    """server_ready / model_info / model_statistics, for a transport that implements ``_control``."""

    async def _control(self, name: str, request):
        raise NotImplementedError

    async def server_ready(self) -> bool:
        return (await self._control("ServerReady", pb.ServerReadyRequest())).ready

    async def model_info(self, model: str, version: str = ""):
        from tailmark.client.transport import ModelInfo, TensorInfo

        metadata = await self._control("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))
        try:
            config = (await self._control("ModelConfig", pb.ModelConfigRequest(name=model, version=version))).config
            max_batch = config.max_batch_size
        except ServerRejected:  # KServe and MLServer have no ModelConfig: infer batching from the shapes
            max_batch = 0
        return ModelInfo(
            name=metadata.name,
            version=version or (metadata.versions[-1] if metadata.versions else ""),
            platform=metadata.platform,
            inputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs),
            outputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in metadata.outputs),
            max_batch_size=max_batch,
        )

    async def model_statistics(self, model: str) -> pb.ModelStatisticsResponse:
        return await self._control("ModelStatistics", pb.ModelStatisticsRequest(name=model))


def control_error(target: str, name: str, request, code: str, details: str) -> Exception:
    """The client error for a failed control RPC (status ``code`` by name)."""
    lowered = details.lower()
    if code == "NOT_FOUND" and hasattr(request, "name"):
        return ModelNotFound(f"{target} does not serve model {request.name!r}: {details}")
    if code == "UNAVAILABLE" and ("ssl" in lowered or "handshake" in lowered or "tls" in lowered):
        return TlsError(f"TLS with {target} failed: {details}")
    if code == "UNAVAILABLE":
        return Unreachable(f"{target} is unavailable: {details}")
    return ServerRejected(f"{name} on {target} failed with {code}: {details}")
