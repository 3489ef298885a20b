"""The inference core: everything the server does, with no gRPC in it.

The transports (server/grpc_aio.py, server/grpc_sync.py) turn RPCs into calls here and map
``ServerError`` subclasses to status codes. ``infer`` is the asyncio path (compute runs in the
model's instance threads, off the event loop, except for backends cheaper than a thread hop);
``infer_blocking`` is the same work for the thread-per-RPC stack. Dynamically batched models go through
their ``Batcher`` (server/batcher.py), shared by both stacks.
"""

from __future__ import annotations

import asyncio
import threading
import time

from tailmark import __version__
from tailmark.protos import inference_pb2 as pb
from tailmark.server import protocol
from tailmark.server.batcher import Batcher, BatchResult
from tailmark.server.errors import ModelFailed, Overloaded, ServerError, Unsupported
from tailmark.server.repository import LoadedModel, Repository

# what ServerMetadata advertises: only what is served (ModelConfig, ModelStatistics). Not "model_repository"
# (there is an index but no load/unload), not "binary_tensor_data" (an HTTP/REST feature; there is no HTTP endpoint)
EXTENSIONS = ("model_configuration", "statistics")


class InferenceCore:
    def __init__(self, repository: Repository, *, server_name: str = "tailmark", max_queue_size: int = 0) -> None:
        self.repository = repository
        self.server_name = server_name
        # bound on requests waiting for an unbatched model's instances (batched models: config.pbtxt)
        self.max_queue_size = max_queue_size  # 0: unbounded
        self.ready = False  # set once the repository is loaded; cleared when draining
        self._batchers: dict[tuple[str, str], Batcher] = {}
        self._batchers_lock = threading.Lock()
        self.on_ready = None  # set by server/cli.py: how a started server announces itself

    # --- inference ---

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        start = time.perf_counter_ns()
        model = self.repository.get(request.model_name, request.model_version)
        try:
            tensors, batch, names = self._decode(request, model)
            decoded = time.perf_counter_ns()
            if model.batching is not None:
                priority, timeout_us = protocol.scheduling_parameters(request)
                batcher = self._batchers.get(model.key) or self._batcher(model)
                result = await batcher.submit(tensors, batch, priority=priority, timeout_us=timeout_us)
                return self._encode_batched(request, model, result, names, start, decoded)
            if model.executor is None:
                outputs, queue_ns, infer_ns = _execute(model, tensors, decoded)
            else:
                self._admit(model)
                loop = asyncio.get_running_loop()
                outputs, queue_ns, infer_ns = await loop.run_in_executor(
                    model.executor, _execute_queued, model, tensors, decoded
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
            if model.batching is not None:
                priority, timeout_us = protocol.scheduling_parameters(request)
                batcher = self._batchers.get(model.key) or self._batcher(model)
                result = batcher.submit_blocking(tensors, batch, priority=priority, timeout_us=timeout_us)
                return self._encode_batched(request, model, result, names, start, decoded)
            if model.executor is None:
                outputs, queue_ns, infer_ns = _execute(model, tensors, decoded)
            else:  # keep the instance count: the model's threads, not the RPC's, run it
                self._admit(model)
                outputs, queue_ns, infer_ns = model.executor.submit(_execute_queued, model, tensors, decoded).result()
            return self._encode(request, model, outputs, names, start, decoded, batch, queue_ns, infer_ns)
        except ServerError:
            model.stats.record_failure(time.perf_counter_ns() - start)
            raise

    def _batcher(self, model: LoadedModel) -> Batcher:
        with self._batchers_lock:
            batcher = self._batchers.get(model.key)
            if batcher is None:
                batcher = self._batchers[model.key] = Batcher(model, model.batching)
            return batcher

    def _admit(self, model: LoadedModel) -> None:
        """Count a request into an unbatched model's queue, or refuse it when --max-queue-size is reached."""
        if not model.stats.try_enqueue(self.max_queue_size):
            raise Overloaded(f"model {model.name!r}: exceeds maximum queue size ({self.max_queue_size})")

    @staticmethod
    def _decode(request, model):
        if model.config.model_transaction_policy.decoupled:  # Triton's rule: its answer is a stream
            raise Unsupported(f"model {model.name!r} is decoupled (it answers with a stream): not for ModelInfer")
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

    @staticmethod
    def _encode_batched(request, model, result: BatchResult, names, start, decoded):
        """Triton's per-request breakdown: its own decode plus the batch's gather count as compute_input."""
        encode_start = time.perf_counter_ns()
        try:
            response = protocol.encode_response(request, model, result.outputs, names)
        except Exception as exc:
            raise ModelFailed(f"model {model.name!r} returned bad outputs: {exc}") from exc
        end = time.perf_counter_ns()
        model.stats.record_request(
            total_ns=end - start,
            queue_ns=result.queue_ns,
            input_ns=decoded - start + result.input_ns,
            infer_ns=result.infer_ns,
            output_ns=result.output_ns + end - encode_start,
        )
        return response

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()

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


def _execute_queued(model: LoadedModel, tensors, submitted_ns: int):
    model.stats.pending_changed(-1)
    return _execute(model, tensors, submitted_ns)


def _execute(model: LoadedModel, tensors, submitted_ns: int):
    """Run in the model's instance thread: returns (outputs, queue ns, compute ns)."""
    begin = time.perf_counter_ns()
    try:
        outputs = model.backend.execute(tensors)
    except Exception as exc:
        raise ModelFailed(f"model {model.name!r} failed: {type(exc).__name__}: {exc}") from exc
    return outputs, begin - submitted_ns, time.perf_counter_ns() - begin
