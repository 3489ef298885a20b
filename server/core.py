"""The inference core: everything the server does, with no gRPC in it.

The transports (server/grpc_aio.py, server/grpc_sync.py) turn RPCs into calls here and map
``ServerError`` subclasses to status codes. ``infer`` is the asyncio path (compute runs in the
model's instance threads, off the event loop); ``infer_blocking`` is the same work for the thread-per-RPC
stack.
"""

from __future__ import annotations

import asyncio
import time

from tailmark.protos import inference_pb2 as pb
from tailmark.server import protocol
from tailmark.server.errors import ModelFailed, ServerError
from tailmark.server.repository import LoadedModel, Repository

from tailmark import __version__

EXTENSIONS = ("model_configuration", "statistics", "model_repository", "binary_tensor_data")


class InferenceCore:
    def __init__(self, repository: Repository, *, server_name: str = "tailmark") -> None:
        self.repository = repository
        self.server_name = server_name
        self.ready = False  # set once the repository is loaded; cleared when draining

    # --- inference ---

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        start = time.perf_counter_ns()
        model = self.repository.get(request.model_name, request.model_version)
        try:
            tensors, batch, names = self._decode(request, model)
            decoded = time.perf_counter_ns()
            if model.executor is None:
                outputs, queue_ns, infer_ns = _execute(model, tensors, decoded)
            else:
                loop = asyncio.get_running_loop()
                outputs, queue_ns, infer_ns = await loop.run_in_executor(
                    model.executor, _execute, model, tensors, decoded
                )
            return self._encode(request, model, outputs, names, start, decoded, batch, queue_ns, infer_ns)
        except ServerError:
            model.stats.record_failure(time.perf_counter_ns() - start)
            raise

    def infer_blocking(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        start = time.perf_counter_ns()
        model = self.repository.get(request.model_name, request.model_version)
        try:
            tensors, batch, names = self._decode(request, model)
            decoded = time.perf_counter_ns()
            if model.executor is None:
                outputs, queue_ns, infer_ns = _execute(model, tensors, decoded)
            else:  # keep the instance count: the model's threads, not the RPC's, run it
                outputs, queue_ns, infer_ns = model.executor.submit(_execute, model, tensors, decoded).result()
            return self._encode(request, model, outputs, names, start, decoded, batch, queue_ns, infer_ns)
        except ServerError:
            model.stats.record_failure(time.perf_counter_ns() - start)
            raise

    @staticmethod
    def _decode(request, model):
        tensors, batch = protocol.decode_inputs(request, model)
        return tensors, batch, protocol.requested_outputs(request, model)

    @staticmethod
    def _encode(request, model, outputs, names, start, decoded, batch, queue_ns, infer_ns):
        encode_start = time.perf_counter_ns()
        try:
            response = protocol.encode_response(request, model, outputs, names)
        except Exception as exc:
            raise ModelFailed(f"model {model.name!r} returned bad outputs: {exc}") from exc
        end = time.perf_counter_ns()
        model.stats.record_success(
            batch_size=batch,
            total_ns=end - start,
            queue_ns=queue_ns,
            input_ns=decoded - start,
            infer_ns=infer_ns,
            output_ns=end - encode_start,
        )
        return response

    # --- health and metadata ---

    def server_metadata(self) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=self.server_name, version=__version__, extensions=EXTENSIONS)

    def model_ready(self, name: str, version: str) -> bool:
        try:
            self.repository.get(name, version)
        except ServerError:
            return False
        return self.ready

    def model_metadata(self, name: str, version: str) -> pb.ModelMetadataResponse:
        model = self.repository.get(name, version)
        entry = self.repository.models[name]

        def tensors(specs):
            return [
                pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape) for s in specs
            ]

        return pb.ModelMetadataResponse(
            name=model.name,
            versions=sorted(entry.versions, key=int),
            platform=model.config.platform or model.config.backend,
            inputs=tensors(model.inputs),
            outputs=tensors(model.outputs),
        )

    def model_config(self, name: str, version: str) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.repository.get(name, version).config)

    def model_statistics(self, name: str, version: str) -> pb.ModelStatisticsResponse:
        if name:
            models = [self.repository.get(name, version)] if version else self._versions_of(name)
        else:
            models = [m for entry in self.repository.models.values() for m in entry.versions.values()]
        return pb.ModelStatisticsResponse(model_stats=[m.stats.to_proto() for m in models])

    def _versions_of(self, name: str) -> list[LoadedModel]:
        self.repository.get(name)  # raises NOT_FOUND / UNAVAILABLE
        return list(self.repository.models[name].versions.values())

    def repository_index(self, ready_only: bool) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        for entry in self.repository.models.values():
            if entry.ready:
                for version in entry.versions:
                    response.models.add(name=entry.name, version=version, state="READY")
            elif not ready_only:
                response.models.add(name=entry.name, state="UNAVAILABLE", reason=entry.reason)
        return response


def _execute(model: LoadedModel, tensors, submitted_ns: int):
    """Run in the model's instance thread: returns (outputs, queue ns, compute ns)."""
    begin = time.perf_counter_ns()
    try:
        outputs = model.backend.execute(tensors)
    except Exception as exc:
        raise ModelFailed(f"model {model.name!r} failed: {type(exc).__name__}: {exc}") from exc
    return outputs, begin - submitted_ns, time.perf_counter_ns() - begin
