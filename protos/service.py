"""The wire paths of the KServe-v2 service and of grpc.health.v1, with their message types.

Our messages live in proto package ``tailmark.v2``, but the bytes are Triton's, so both servers and
clients bind the RPCs by Triton's method paths below rather than by generated service stubs.
"""

from __future__ import annotations

from typing import NamedTuple

from tailmark.protos import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"


class Rpc(NamedTuple):
    name: str
    request: type
    response: type
    streaming: bool = False  # bidirectional stream (ModelStreamInfer)
    service: str = SERVICE

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


# the RPCs tailmark's server implements; every other method of the service answers UNIMPLEMENTED
RPCS: dict[str, Rpc] = {
    rpc.name: rpc
    for rpc in (
        Rpc("ServerLive", pb.ServerLiveRequest, pb.ServerLiveResponse),
        Rpc("ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse),
        Rpc("ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse),
        Rpc("ServerMetadata", pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        Rpc("ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        Rpc("ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse),
        Rpc("ModelStreamInfer", pb.ModelInferRequest, pb.ModelStreamInferResponse, streaming=True),
        Rpc("ModelConfig", pb.ModelConfigRequest, pb.ModelConfigResponse),
        Rpc("ModelStatistics", pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
        Rpc("RepositoryIndex", pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    )
}

HEALTH_CHECK = Rpc("Check", pb.HealthCheckRequest, pb.HealthCheckResponse, service=HEALTH_SERVICE)
