"""A small KServe-v2 gRPC endpoint that answers the way other servers legally (or not) do.

It speaks real gRPC on a loopback port, in the test process: ModelMetadata, ServerReady, and ModelInfer
for one model; ModelConfig and ModelStatistics are UNIMPLEMENTED, as on KServe's and MLServer's model
servers. ``answer`` picks how ModelInfer replies to a request (it echoes the request's first input):

    raw       raw_output_contents, as Triton and tailmark do
    typed     typed ``contents`` (fp32_contents), as KServe's Python servers do
    empty     OK with no outputs at all (Triton with a python stub that failed quietly)
    noisy     raw, offset by 0.25 x the number of calls so far (an endpoint that answers each time differently)

``inputs=False`` leaves inputs and outputs out of the metadata (KServe's default); ``outputs=False`` only the
outputs (the answers still carry OUTPUT0).
"""

from __future__ import annotations

import itertools
from concurrent import futures

import grpc
import numpy as np

from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import decode_raw, decode_typed
from tailmark.protos.service import RPCS


class KServeLike:
    """``with KServeLike(answer="typed") as endpoint: endpoint.target``; model ``echo`` (FP32 [-1] -> [-1])."""

    def __init__(self, answer: str = "raw", *, inputs: bool = True, outputs: bool = True, model: str = "echo") -> None:
        self.answer = answer
        self.model = model
        self.inputs = inputs
        self.outputs = outputs
        self._calls = itertools.count(1)
        self.calls = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "ServerReady": lambda r, c: pb.ServerReadyResponse(ready=True),
            "ModelMetadata": self._metadata,
            "ModelInfer": self._infer,
        }
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                handler, request_deserializer=RPCS[name].request.FromString,
                response_serializer=RPCS[name].response.SerializeToString,
            )
            for name, handler in handlers.items()
        }  # fmt: skip
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", methods),)
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def __enter__(self) -> KServeLike:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=None)

    def _metadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        if request.name != self.model:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.name} not found")
        response = pb.ModelMetadataResponse(name=self.model, versions=["1"], platform="kserve-like")
        if self.inputs:
            response.inputs.add(name="INPUT0", datatype="FP32", shape=[-1])
            if self.outputs:
                response.outputs.add(name="OUTPUT0", datatype="FP32", shape=[-1])
        return response

    def _infer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        self.calls = next(self._calls)
        if not request.inputs:
            context.abort(grpc.StatusCode.INTERNAL, "no inputs")
        tensor = request.inputs[0]
        if request.raw_input_contents:
            array = decode_raw(request.raw_input_contents[0], tensor.datatype, tuple(tensor.shape))
        else:
            array = decode_typed(tensor.contents, tensor.datatype, tuple(tensor.shape))
        response = pb.ModelInferResponse(model_name=self.model, model_version="1")
        if self.answer == "empty":
            return response
        output = response.outputs.add(name="OUTPUT0", datatype="FP32", shape=array.shape)
        if self.answer == "typed":
            output.contents.fp32_contents.extend(array.reshape(-1).tolist())
        elif self.answer == "noisy":
            response.raw_output_contents.append((array.astype(np.float32) + np.float32(0.25 * self.calls)).tobytes())
        else:
            response.raw_output_contents.append(array.astype(np.float32).tobytes())
        return response
