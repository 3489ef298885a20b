"""A corpus of malformed requests: every one gets the right status, and the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as triton
from tritonclient.utils import InferenceServerException

from support.serve import ServerProcess
from tailmark.protos import inference_pb2 as pb

S = grpc.StatusCode
INFER = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(model="identity", name="INPUT0", datatype="FP32", shape=(4,), raw=None, **fields):
    request = pb.ModelInferRequest(model_name=model, **fields)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(np.zeros(4, np.float32).tobytes() if raw is None else raw)
    return request


def with_input_param(key):
    request = infer_request()
    request.inputs[0].parameters[key].string_param = "region0"
    return request


def with_output(name, param=None):
    request = infer_request()
    output = request.outputs.add(name=name)
    if param:
        output.parameters[param].int64_param = 1
    return request


def two_raw():
    request = infer_request()
    request.raw_input_contents.append(b"\x00" * 16)
    return request


def extra_input():
    request = infer_request()
    request.inputs.add(name="INPUT1", datatype="FP32", shape=[4])
    request.raw_input_contents.append(b"\x00" * 16)
    return request


def duplicate_input():
    request = infer_request()
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    request.raw_input_contents.append(b"\x00" * 16)
    return request


def missing_input():
    request = pb.ModelInferRequest(model_name="two_inputs")
    request.inputs.add(name="A", datatype="INT32", shape=[2, 2])
    request.raw_input_contents.append(b"\x00" * 16)
    return request


def no_data():
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    return request


def typed(datatype, field, values, model="identity"):
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=[4])
    getattr(tensor.contents, field).extend(values)
    return request


def batched(shape, nbytes):
    return infer_request("identity_batched", shape=shape, raw=b"\x00" * nbytes)


# (case id, method path, request bytes, expected status)
OUR_MESSAGES = [
    ("unknown-model", INFER, infer_request("nope"), S.NOT_FOUND),
    ("empty-model-name", INFER, infer_request(""), S.NOT_FOUND),
    ("unknown-version", INFER, infer_request(model_version="7"), S.NOT_FOUND),
    ("unavailable-model", INFER, infer_request("broken_config"), S.UNAVAILABLE),
    ("missing-model-file", INFER, infer_request("missing_file"), S.UNAVAILABLE),
    ("wrong-input-name", INFER, infer_request(name="IN"), S.INVALID_ARGUMENT),
    ("wrong-datatype", INFER, infer_request(datatype="INT32"), S.INVALID_ARGUMENT),
    ("unknown-datatype", INFER, infer_request(datatype="FP8"), S.INVALID_ARGUMENT),
    ("wrong-rank", INFER, infer_request(shape=(2, 2)), S.INVALID_ARGUMENT),
    ("negative-dim", INFER, infer_request(shape=(-4,)), S.INVALID_ARGUMENT),
    ("short-bytes", INFER, infer_request(raw=b"\x00" * 15), S.INVALID_ARGUMENT),
    ("long-bytes", INFER, infer_request(raw=b"\x00" * 17), S.INVALID_ARGUMENT),
    ("empty-bytes", INFER, infer_request(raw=b""), S.INVALID_ARGUMENT),
    ("two-raw-one-input", INFER, two_raw(), S.INVALID_ARGUMENT),
    ("extra-input", INFER, extra_input(), S.INVALID_ARGUMENT),
    ("duplicate-input", INFER, duplicate_input(), S.INVALID_ARGUMENT),
    ("missing-input", INFER, missing_input(), S.INVALID_ARGUMENT),
    ("no-data", INFER, no_data(), S.INVALID_ARGUMENT),
    ("shm-region-input", INFER, with_input_param("shared_memory_region"), S.INVALID_ARGUMENT),
    ("shm-size-input", INFER, with_input_param("shared_memory_byte_size"), S.INVALID_ARGUMENT),
    ("shm-offset-input", INFER, with_input_param("shared_memory_offset"), S.INVALID_ARGUMENT),
    ("shm-output", INFER, with_output("OUTPUT0", "shared_memory_region"), S.INVALID_ARGUMENT),
    ("classification-output", INFER, with_output("OUTPUT0", "classification"), S.INVALID_ARGUMENT),
    ("unknown-output", INFER, with_output("OUTPUT9"), S.INVALID_ARGUMENT),
    ("typed-wrong-count", INFER, typed("FP32", "fp32_contents", [1.0, 2.0]), S.INVALID_ARGUMENT),
    ("typed-fp16", INFER, typed("FP16", "fp32_contents", [1.0] * 4, "identity_fp16"), S.INVALID_ARGUMENT),
    ("bytes-cut-prefix", INFER, infer_request("identity_bytes", datatype="BYTES", raw=b"\x01\x00"), S.INVALID_ARGUMENT),
    (
        "bytes-overlong",
        INFER,
        infer_request("identity_bytes", datatype="BYTES", raw=b"\x09\x00\x00\x00ab"),
        S.INVALID_ARGUMENT,
    ),
    ("batch-too-big", INFER, batched((9, 4), 9 * 16), S.INVALID_ARGUMENT),
    ("batch-zero", INFER, batched((0, 4), 0), S.INVALID_ARGUMENT),
    ("batch-missing-dim", INFER, batched((4,), 16), S.INVALID_ARGUMENT),
    ("batch-wrong-dim", INFER, batched((1, 5), 20), S.INVALID_ARGUMENT),
    ("model-raises", INFER, infer_request("error"), S.INTERNAL),
    (
        "metadata-unknown",
        "/inference.GRPCInferenceService/ModelMetadata",
        pb.ModelMetadataRequest(name="x"),
        S.NOT_FOUND,
    ),
    (
        "metadata-version",
        "/inference.GRPCInferenceService/ModelMetadata",
        pb.ModelMetadataRequest(name="identity", version="3"),
        S.NOT_FOUND,
    ),
    (
        "metadata-broken",
        "/inference.GRPCInferenceService/ModelMetadata",
        pb.ModelMetadataRequest(name="broken_config"),
        S.UNAVAILABLE,
    ),
    ("config-unknown", "/inference.GRPCInferenceService/ModelConfig", pb.ModelConfigRequest(name="x"), S.NOT_FOUND),
    (
        "stats-unknown",
        "/inference.GRPCInferenceService/ModelStatistics",
        pb.ModelStatisticsRequest(name="x"),
        S.NOT_FOUND,
    ),
    ("health-unknown-service", "/grpc.health.v1.Health/Check", pb.HealthCheckRequest(service="x.Y"), S.NOT_FOUND),
]

UNIMPLEMENTED = [
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    "/inference.GRPCInferenceService/SystemSharedMemoryRegister",
    "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
    "/inference.GRPCInferenceService/CudaSharedMemoryRegister",
    "/inference.GRPCInferenceService/TraceSetting",
    "/inference.GRPCInferenceService/LogSettings",
    "/inference.GRPCInferenceService/NoSuchMethod",
    "/no.such.Service/Method",
    "/grpc.health.v1.Health/Watch",
]

RAW_BYTES = [
    ("garbage", INFER, b"\xff\xff\xff\xff"),
    ("truncated", INFER, infer_request().SerializeToString()[:-5]),
    ("invalid-utf8-name", INFER, b"\x0a\x02\xff\xfe"),  # proto3 strings must be UTF-8
    ("bad-length", INFER, b"\x0a\xff\xff\xff\xff\x0f"),
    ("metadata-garbage", "/inference.GRPCInferenceService/ModelMetadata", b"\x12\x80"),
    ("config-garbage", "/inference.GRPCInferenceService/ModelConfig", b"\xff"),
    ("stats-garbage", "/inference.GRPCInferenceService/ModelStatistics", b"\x0a\x05ab"),
    ("health-garbage", "/grpc.health.v1.Health/Check", b"\x0a\x09x"),
]


def expected_for_random(data: bytes) -> grpc.StatusCode:
    try:
        request = pb.ModelInferRequest.FromString(data)
    except Exception:
        return S.INVALID_ARGUMENT
    return S.NOT_FOUND if request.model_name not in ("identity",) else S.INVALID_ARGUMENT


RANDOM = [
    (f"random-{seed}", np.random.default_rng(seed).bytes(int(np.random.default_rng(seed).integers(1, 200))))
    for seed in range(8)
]


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def call(channel, path: str, data: bytes) -> grpc.StatusCode:
    try:
        channel.unary_unary(path)(data, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return S.OK, ""


def test_corpus_is_large_enough():
    assert len(OUR_MESSAGES) + len(UNIMPLEMENTED) + len(RAW_BYTES) + len(RANDOM) + len(TRITONCLIENT) >= 50


@pytest.mark.parametrize(("case", "path", "message", "expected"), OUR_MESSAGES, ids=[c[0] for c in OUR_MESSAGES])
def test_our_malformed_messages(channel, case, path, message, expected):
    code, details = call(channel, path, message.SerializeToString())
    assert code == expected, details
    assert details  # every error says what is wrong


@pytest.mark.parametrize("path", UNIMPLEMENTED)
def test_other_methods_are_unimplemented(channel, path):
    code, _ = call(channel, path, b"")
    assert code == S.UNIMPLEMENTED


@pytest.mark.parametrize(("case", "path", "data"), RAW_BYTES, ids=[c[0] for c in RAW_BYTES])
def test_undecodable_bytes(channel, case, path, data):
    code, details = call(channel, path, data)
    assert code == S.INVALID_ARGUMENT
    assert "malformed" in details


@pytest.mark.parametrize(("case", "data"), RANDOM, ids=[c[0] for c in RANDOM])
def test_random_bytes(channel, case, data):
    code, _ = call(channel, INFER, data)
    assert code == expected_for_random(data)


def triton_infer(model, name, datatype, shape, raw):
    request = triton.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


TRITONCLIENT = [
    ("tc-unknown-model", triton_infer("nope", "INPUT0", "FP32", [1], b"\0" * 4), S.NOT_FOUND),
    ("tc-wrong-name", triton_infer("identity", "X", "FP32", [1], b"\0" * 4), S.INVALID_ARGUMENT),
    ("tc-wrong-type", triton_infer("identity", "INPUT0", "FP64", [1], b"\0" * 8), S.INVALID_ARGUMENT),
    ("tc-short", triton_infer("identity", "INPUT0", "FP32", [2], b"\0" * 4), S.INVALID_ARGUMENT),
    ("tc-batched-rank", triton_infer("identity_batched", "INPUT0", "FP32", [4], b"\0" * 16), S.INVALID_ARGUMENT),
    ("tc-error-model", triton_infer("error", "INPUT0", "FP32", [1], b"\0" * 4), S.INTERNAL),
]


@pytest.mark.parametrize(("case", "message", "expected"), TRITONCLIENT, ids=[c[0] for c in TRITONCLIENT])
def test_tritonclient_messages(channel, case, message, expected):
    code, details = call(channel, INFER, message.SerializeToString())
    assert code == expected, details


def test_tritonclient_api_errors_are_readable(server):
    with grpcclient.InferenceServerClient(server.target) as client:
        tensor = grpcclient.InferInput("INPUT0", [3], "INT8")
        tensor.set_data_from_numpy(np.zeros(3, np.int8))
        with pytest.raises(InferenceServerException) as info:
            client.infer("identity", [tensor])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "datatype INT8, expected FP32" in info.value.message()
        with pytest.raises(InferenceServerException, match="deliberate failure"):
            client.infer("error", [_fp32(client)])
        with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
            client.load_model("identity")


def _fp32(_client):
    tensor = grpcclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.ones(2, np.float32))
    return tensor


def test_server_survives_the_corpus(server, channel):
    """Run after the corpus (file order): the process is alive and a good request succeeds."""
    for _, path, message, _ in OUR_MESSAGES:
        call(channel, path, message.SerializeToString())
    for _, path, data in RAW_BYTES:
        call(channel, path, data)
    assert server.alive()
    with grpcclient.InferenceServerClient(server.target) as client:
        assert client.is_server_ready()
        result = client.infer("identity", [_fp32(client)])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.ones(2, np.float32))


def test_repository_index_reports_unavailable_models_with_reasons(server):
    with grpcclient.InferenceServerClient(server.target) as client:
        index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["identity"].state == "READY"
    assert index["broken_config"].state == "UNAVAILABLE"
    assert "config.pbtxt" in index["broken_config"].reason
    assert "no model file" in index["missing_file"].reason


def test_over_the_size_limit_is_resource_exhausted(test_repository):
    with ServerProcess(test_repository, "--max-message-bytes", "65536") as process:
        with grpc.insecure_channel(process.target) as ch:
            big = infer_request(shape=(32768,), raw=b"\x00" * (32768 * 4))
            code, details = call(ch, INFER, big.SerializeToString())
            assert code == S.RESOURCE_EXHAUSTED, details
            code, _ = call(ch, INFER, infer_request().SerializeToString())
            assert code == S.OK
        assert process.alive()
