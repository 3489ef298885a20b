"""The control RPCs every transport offers on top of its ``_control(name, request)``, and their errors.

Endpoints differ in which KServe-v2 extensions they offer: KServe's and MLServer's model servers have
no ModelConfig and no ModelStatistics. The client then goes on without them (batching taken as none,
no server-side breakdown) and ``endpoint_notes`` says so, one line per missing extension, for the results.
"""

from __future__ import annotations

from tailmark.client.errors import ConfigError, ModelNotFound, ServerRejected, TlsError, Unreachable
from tailmark.protos import inference_pb2 as pb

NO_MODEL_CONFIG = "the endpoint offers no ModelConfig: batching taken as none (max_batch_size 0)"
NO_MODEL_STATISTICS = "the endpoint offers no ModelStatistics: no server-side breakdown (queue, compute) per scenario"


class ControlRpcs:
    """server_ready / model_info / model_statistics, for a transport that implements ``_control``."""

    async def _control(self, name: str, request):
        raise NotImplementedError

    async def server_ready(self) -> bool:
        return (await self._control("ServerReady", pb.ServerReadyRequest())).ready

    async def model_info(self, model: str, version: str = ""):
        """The model's metadata and batching; ConfigError if it lists no inputs (no request can be built)."""
        from tailmark.client.transport import ModelInfo, TensorInfo

        metadata = await self._control("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))
        if not metadata.inputs:
            target = getattr(self, "target", "the endpoint")
            raise ConfigError(
                f"model {model!r} on {target} lists no inputs in its metadata, so no request can be built for it "
                "(KServe's default for a model without a signature): serve it with its input tensors declared"
            )
        config_offered = True
        try:
            config = (await self._control("ModelConfig", pb.ModelConfigRequest(name=model, version=version))).config
            max_batch = config.max_batch_size
        except ServerRejected:  # KServe and MLServer have no ModelConfig: take the shapes as they are
            max_batch = 0
            config_offered = False
        return ModelInfo(
            name=metadata.name,
            version=version or (metadata.versions[-1] if metadata.versions else ""),
            platform=metadata.platform,
            inputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in metadata.inputs),
            outputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in metadata.outputs),
            max_batch_size=max_batch,
            config_offered=config_offered,
        )

    async def model_statistics(self, model: str) -> pb.ModelStatisticsResponse:
        return await self._control("ModelStatistics", pb.ModelStatisticsRequest(name=model))


async def endpoint_notes(transport, info) -> list[str]:
    """One line per extension the endpoint lacks for ``info``'s model (ModelConfig, ModelStatistics); [] if none.

    Call once per run, after ``model_info``, and keep the lines with the results."""
    notes = [] if info.config_offered else [NO_MODEL_CONFIG]
    fetch = getattr(transport, "model_statistics", None)
    try:
        if fetch is None:
            raise ServerRejected("no ModelStatistics")
        await fetch(info.name)
    except ServerRejected:  # UNIMPLEMENTED and kin; an endpoint that is down fails the run elsewhere
        notes.append(NO_MODEL_STATISTICS)
    return notes


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
