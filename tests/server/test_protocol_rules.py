"""Protocol rules every server stack keeps (issue 10, item 7): one form of input data per request, and
ServerMetadata advertises only the extensions that are served."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tailmark.protos import inference_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def call(channel, method: str, request, response_type):
    return channel.unary_unary(
        SERVICE + method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString,
    )(request, timeout=30)


def identity_request(*, raw: bool, typed: bool) -> pb.ModelInferRequest:
    values = np.arange(4, dtype=np.float32)
    request = pb.ModelInferRequest(model_name="identity")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    if typed:
        tensor.contents.fp32_contents.extend(values.tolist())
    if raw:
        request.raw_input_contents.append(values.tobytes())
    return request


def test_raw_and_typed_contents_together_are_refused(channel):
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "ModelInfer", identity_request(raw=True, typed=True), pb.ModelInferResponse)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'INPUT0' has typed contents in a request that carries raw_input_contents" in info.value.details()
    for raw, typed in ((True, False), (False, True)):  # each form alone is served, and the server goes on
        response = call(channel, "ModelInfer", identity_request(raw=raw, typed=typed), pb.ModelInferResponse)
        assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_server_metadata_advertises_what_is_served(channel):
    metadata = call(channel, "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    assert sorted(metadata.extensions) == ["model_configuration", "statistics"]
    # each advertised extension answers ...
    config = call(channel, "ModelConfig", pb.ModelConfigRequest(name="identity"), pb.ModelConfigResponse)
    assert config.config.input[0].name == "INPUT0"
    statistics = call(
        channel, "ModelStatistics", pb.ModelStatisticsRequest(name="identity"), pb.ModelStatisticsResponse
    )
    assert statistics.model_stats
    # ... and model_repository, not advertised, has no load or unload
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(SERVICE + "RepositoryModelLoad")(b"", timeout=30)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
