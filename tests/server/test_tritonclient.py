"""tritonclient (sync and asyncio) against a real ``tailmark serve`` process."""

from __future__ import annotations

import asyncio
import queue

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tailmark.protos.codec import DATATYPES, numpy_dtype


def sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([b"", b"tail", b"\x00\xffmark", "ünï".encode()], dtype=object)
    if datatype == "BOOL":
        return np.array([True, False, True, True])
    if datatype == "BF16":
        return np.array([1.5, -2.0, 3.25, 0.0], dtype=ml_dtypes.bfloat16)
    return np.array([0, 1, 100, 7], dtype=numpy_dtype(datatype))


@pytest.fixture(scope="module")
def client(server):
    with grpcclient.InferenceServerClient(server.target) as c:
        yield c


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("identity")
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("broken_config")
    metadata = client.get_server_metadata()
    assert metadata.name == "tailmark"
    # perf_analyzer collects server-side statistics only when this extension is advertised
    assert {"statistics", "model_configuration"} <= set(metadata.extensions)


def test_model_metadata_and_config(client):
    metadata = client.get_model_metadata("identity_batched")
    assert metadata.name == "identity_batched"
    assert list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("INPUT0", "FP32", [-1, 4])]
    config = client.get_model_config("identity_batched").config
    assert config.max_batch_size == 8
    assert config.backend == "identity"
    assert config.input[0].dims == [4]


@pytest.mark.parametrize("datatype", DATATYPES)
def test_infer_every_datatype(client, datatype):
    data = sample(datatype)
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = client.infer(f"identity_{datatype.lower()}", [tensor], request_id="r-1")
    out = result.as_numpy("OUTPUT0")
    assert result.get_response().id == "r-1"
    assert result.get_output("OUTPUT0").datatype == datatype
    if datatype == "BYTES":
        assert list(out) == list(data)
    else:
        assert out.dtype == data.dtype
        np.testing.assert_array_equal(out, data)


def test_infer_several_inputs_and_requested_outputs(client):
    a = np.arange(4, dtype=np.int32).reshape(2, 2)
    b = np.array([0.5, 1.5, 2.5], dtype=np.float32)
    inputs = [grpcclient.InferInput("A", [2, 2], "INT32"), grpcclient.InferInput("B", [3], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("two_inputs", inputs, outputs=[grpcclient.InferRequestedOutput("B_OUT")])
    np.testing.assert_array_equal(result.as_numpy("B_OUT"), b)
    assert result.as_numpy("A_OUT") is None  # not requested, not returned
    both = client.infer("two_inputs", inputs)
    np.testing.assert_array_equal(both.as_numpy("A_OUT"), a)


def test_default_repository_models_answer(tmp_path):
    """Every model in the built-in repository gives correct answers to tritonclient."""
    import torch

    from support.serve import ServerProcess
    from tailmark.models import resnet
    from tailmark.server.default_repository import build

    repository = build(tmp_path / "default")
    with ServerProcess(repository) as process, grpcclient.InferenceServerClient(process.target) as c:
        x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        logits = c.infer("resnet", [tensor]).as_numpy("logits")
        with torch.inference_mode():
            expected = resnet.build(seed=0)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
        v = np.arange(5, dtype=np.float32)
        tensor = grpcclient.InferInput("INPUT0", [5], "FP32")
        tensor.set_data_from_numpy(v)
        np.testing.assert_array_equal(c.infer("identity", [tensor]).as_numpy("OUTPUT0"), v)
        np.testing.assert_array_equal(c.infer("sleep", [tensor]).as_numpy("OUTPUT0"), v)
        np.testing.assert_array_equal(c.infer("null", [tensor]).as_numpy("OUTPUT0"), np.zeros(1, np.float32))


def test_streaming_infer(client):
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i in range(600):  # more than a stream's read-ahead (STREAM_IN_FLIGHT): its slots come back
            data = np.full(3, i, dtype=np.float32)
            tensor = grpcclient.InferInput("INPUT0", [3], "FP32")
            tensor.set_data_from_numpy(data)
            client.async_stream_infer("identity", [tensor], request_id=str(i))
        bad = grpcclient.InferInput("INPUT0", [3], "FP32")
        bad.set_data_from_numpy(np.zeros(3, np.float32))
        client.async_stream_infer("no_such_model", [bad], request_id="bad")
        got = {}
        errors = []
        flags = []
        for _ in range(601):
            result, error = results.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("OUTPUT0")
                flags.append(result.get_response().parameters["triton_final_response"].bool_param)
    finally:
        client.stop_stream()
    assert sorted(got, key=int) == [str(i) for i in range(600)]
    assert flags == [True] * 600  # as Triton: each answer of a non-decoupled model is its request's last
    for i, value in got.items():
        np.testing.assert_array_equal(value, np.full(3, int(i), np.float32))
    assert len(errors) == 1 and "no_such_model" in errors[0]


def test_statistics_count_exactly_the_requests_sent(server, test_repository):
    with grpcclient.InferenceServerClient(server.target) as c:
        before = c.get_inference_statistics("identity_int64").model_stats[0]
        data = np.arange(6, dtype=np.int64)
        tensor = grpcclient.InferInput("INPUT0", [6], "INT64")
        tensor.set_data_from_numpy(data)
        for _ in range(17):
            c.infer("identity_int64", [tensor])
        bad = grpcclient.InferInput("INPUT0", [6], "FP32")  # wrong datatype: counted as a failure
        bad.set_data_from_numpy(data.astype(np.float32))
        with pytest.raises(InferenceServerException):
            c.infer("identity_int64", [bad])
        after = c.get_inference_statistics("identity_int64").model_stats[0]
    s0, s1 = before.inference_stats, after.inference_stats
    assert s1.success.count - s0.success.count == 17
    assert s1.fail.count - s0.fail.count == 1
    assert after.inference_count - before.inference_count == 17
    assert after.execution_count - before.execution_count == 17
    assert s1.compute_infer.count - s0.compute_infer.count == 17
    assert s1.success.ns > s0.success.ns
    assert after.last_inference > 0
    batch_one = next(b for b in after.batch_stats if b.batch_size == 1)
    assert batch_one.compute_infer.count >= 17


def test_asyncio_client(server):
    async def scenario():
        async with aioclient.InferenceServerClient(server.target) as c:
            assert await c.is_server_live()
            assert await c.is_model_ready("identity_fp16")
            metadata = await c.get_model_metadata("identity_fp16")
            assert metadata.inputs[0].datatype == "FP16"
            config = await c.get_model_config("identity_fp16")
            assert config.config.name == "identity_fp16"

            async def one(i: int):
                data = np.full(4, i, dtype=np.float16)
                tensor = aioclient.InferInput("INPUT0", [4], "FP16")
                tensor.set_data_from_numpy(data)
                result = await c.infer("identity_fp16", [tensor])
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)

            await asyncio.gather(*(one(i) for i in range(32)))

            async def requests():
                for i in range(5):
                    tensor = aioclient.InferInput("INPUT0", [2], "BYTES")
                    tensor.set_data_from_numpy(np.array([b"x" * i, b"y"], dtype=object))
                    yield {"model_name": "identity_bytes", "inputs": [tensor], "request_id": str(i)}

            seen = []
            async for result, error in c.stream_infer(requests()):
                assert error is None
                seen.append(result.get_response().id)
            assert sorted(seen) == [str(i) for i in range(5)]
            stats = await c.get_inference_statistics("identity_fp16")
            assert stats.model_stats[0].inference_stats.success.count >= 32

    asyncio.run(scenario())
