"""``tailmark serve --http-port``: the REST frontend driven by tritonclient.http (sync and aio, JSON and
binary tensors, every datatype), by raw sockets with bad input (it answers the right status and keeps
serving), and by tailmark's own ``--transport http`` (answers equal to the gRPC path's; a VALID run)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time

import ml_dtypes
import numpy as np
import pytest

tritonhttp = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
import tritonclient.http.aio as tritonhttp_aio  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from support.runcli import valid_server_run_over_rest  # noqa: E402
from support.serve import ServerProcess  # noqa: E402
from tailmark.protos.codec import DATATYPES  # noqa: E402

MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def rest(test_repository):
    with ServerProcess(test_repository, "--http-port", "0", "--max-message-bytes", str(MAX_BODY)) as process:
        process.http_url = process.rest_address
        yield process


def _array(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([b"tail", b"", b"mark"], dtype=object)
    if datatype == "BOOL":
        return np.array([True, False, True])
    if datatype == "BF16":
        return np.array([1.5, -2.0, 3.0], dtype=ml_dtypes.bfloat16)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype) or datatype.lower()
    return np.array([1, 2, 3], dtype=dtype)


# tritonclient cannot put BF16 in JSON (it has no JSON form for it); FP16 neither
JSON_DATATYPES = [d for d in DATATYPES if d not in ("BF16", "FP16")]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_sync_every_datatype(rest, binary):
    client = tritonhttp.InferenceServerClient(rest.http_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("identity_fp32")
    server_metadata = client.get_server_metadata()
    assert server_metadata["name"] == "tailmark" and "binary_tensor_data" in server_metadata["extensions"]
    metadata = client.get_model_metadata("identity_int32")
    assert metadata["inputs"] == [{"name": "INPUT0", "datatype": "INT32", "shape": [-1]}]
    assert int(client.get_model_config("identity_fp32").get("max_batch_size", 0)) == 0
    for datatype in DATATYPES if binary else JSON_DATATYPES:
        array = _array(datatype)
        tensor = tritonhttp.InferInput("INPUT0", list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        output = tritonhttp.InferRequestedOutput("OUTPUT0", binary_data=binary)
        answer = client.infer(f"identity_{datatype.lower()}", [tensor], outputs=[output]).as_numpy("OUTPUT0")
        if datatype == "BYTES":
            assert [bytes(x) if not isinstance(x, str) else x.encode() for x in answer] == list(array), datatype
        else:
            np.testing.assert_array_equal(answer.astype(array.dtype), array, err_msg=datatype)
    stats = client.get_inference_statistics("identity_fp32")
    assert int(stats["model_stats"][0]["inference_stats"]["success"]["count"]) >= 1
    with pytest.raises(InferenceServerException) as failed:
        client.infer("no_such_model", [tensor])
    assert "no_such_model" in str(failed.value)
    wrong = tritonhttp.InferInput("INPUT0", [3], "INT32")
    wrong.set_data_from_numpy(np.array([1, 2, 3], dtype=np.int32))
    with pytest.raises(InferenceServerException) as failed:
        client.infer("identity_fp32", [wrong])
    assert failed.value.status() == "400"
    client.close()


def test_tritonclient_http_aio(rest):
    async def go():
        client = tritonhttp_aio.InferenceServerClient(rest.http_url)
        try:
            assert await client.is_server_live()
            array = np.linspace(-1, 1, 8, dtype=np.float32)
            tensor = tritonhttp_aio.InferInput("INPUT0", [8], "FP32")
            tensor.set_data_from_numpy(array)
            answers = await asyncio.gather(*(client.infer("identity_fp32", [tensor]) for _ in range(16)))
            for answer in answers:
                np.testing.assert_array_equal(answer.as_numpy("OUTPUT0"), array)
        finally:
            await client.close()

    asyncio.run(go())


def _post(url: str, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(url, timeout=10)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        connection.close()


def _good(url: str) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1.0, 2.5]}]})
    status, answer = _post(url, "/v2/models/identity_fp32/infer", body.encode(), {})
    assert status == 200 and answer["outputs"][0]["data"] == [1.0, 2.5]


def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(rest):
    url = rest.http_url
    header = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
    ).encode()
    cases = [
        (b"{not json", {}, 400),
        (b"[" * 100_000 + b"]" * 100_000, {}, 400),  # nested past the JSON parser's recursion limit
        (json.dumps({"inputs": [{"name": "INPUT0", "shape": [3], "datatype": "FP32", "data": [1]}]}).encode(), {}, 400),
        (json.dumps({"inputs": [{"name": "NOPE", "shape": [1], "datatype": "FP32", "data": [1]}]}).encode(), {}, 400),
        (header + bytes(4), {"Inference-Header-Content-Length": str(len(header))}, 400),  # 8 promised, 4 sent
        (header + bytes(12), {"Inference-Header-Content-Length": str(len(header))}, 400),  # 4 bytes too many
        (header + bytes(8), {"Inference-Header-Content-Length": str(len(header) + 100)}, 400),
        (bytes(MAX_BODY + 1), {}, 413),
    ]
    for body, headers, expected in cases:
        status, answer = _post(url, "/v2/models/identity_fp32/infer", body, headers)
        assert status == expected, (body[:60], answer)
        assert answer.get("error"), answer
        _good(url)
    binary = {"Inference-Header-Content-Length": str(len(header))}
    status, answer = _post(url, "/v2/models/no_such_model/infer", header + bytes(8), binary)
    assert status == 404 and "no_such_model" in answer["error"]
    status, _ = _post(url, "/v2/nothing/here", b"", {})
    assert status == 404
    # a slow client, half a body sent, holds only its own connection
    host, port = url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
        started = time.perf_counter()
        _good(url)
        assert time.perf_counter() - started < 2
    _good(url)


def test_the_tailmark_client_over_rest_equals_grpc_and_runs_valid(rest, tmp_path):
    from tailmark.client.h2_transport import H2Transport
    from tailmark.client.http_transport import HttpTransport
    from tailmark.client.response_check import output_arrays
    from tailmark.client.samples import random_pool
    from tailmark.protos import inference_pb2 as pb

    async def compare():
        for json_tensors in (False, True):
            over_rest = await HttpTransport.connect(f"http://{rest.http_url}", json_tensors=json_tensors)
            over_grpc = await H2Transport.connect(rest.target)
            try:
                for model in ("identity_fp32", "identity_bytes", "identity_int64", "identity_bool"):
                    info = await over_rest.model_info(model)
                    assert info == await over_grpc.model_info(model)
                    payload = random_pool(info, count=1, seed=3, shapes={"INPUT0": (5,)}).payload(0)
                    theirs = output_arrays(pb.ModelInferResponse.FromString(await over_rest.infer(payload)))
                    ours = output_arrays(pb.ModelInferResponse.FromString(await over_grpc.infer(payload)))
                    for name, array in ours.items():
                        assert theirs[name].dtype == array.dtype
                        np.testing.assert_array_equal(theirs[name], array)
                stats = await over_rest.model_statistics("identity_fp32")
                assert stats.model_stats[0].inference_stats.success.count >= 1
            finally:
                await over_rest.aclose()
                await over_grpc.aclose()

    asyncio.run(compare())
    doc = valid_server_run_over_rest(
        f"http://{rest.http_url}", "identity_fp32", tmp_path / "run", target_qps=250, min_queries=600
    )
    assert doc["environment"]["target"]["notes"] == []


def test_tls_mutual_tls_and_the_bearer_token(test_repository, tmp_path):
    """The REST port takes the gRPC port's TLS files and token: tailmark's client over https with a client
    certificate and the token gets answers; without the token, 401 (UNAUTHENTICATED); plain http fails."""
    from support.pki import make_pki
    from tailmark.client.http_transport import HttpTransport
    from tailmark.client.transport import RequestFailed, TlsSettings

    pki = make_pki(tmp_path)
    tls = ("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-ca", str(pki / "ca.pem"))
    with ServerProcess(test_repository, "--http-port", "0", *tls, "--auth-token", "s3cret") as process:
        address = process.rest_address
        mutual = TlsSettings(pki / "ca.pem", pki / "client.pem", pki / "client.key")

        async def go():
            token = [("authorization", "Bearer s3cret")]
            client = await HttpTransport.connect(f"https://{address}", tls=mutual, metadata=token)
            try:
                info = await client.model_info("identity_fp32")
                assert info.name == "identity_fp32"
            finally:
                await client.aclose()
            client = await HttpTransport.connect(f"https://{address}", tls=mutual)
            try:
                from tailmark.client.samples import random_pool

                payload = random_pool(info, count=1, seed=1, shapes={"INPUT0": (2,)}).payload(0)
                with pytest.raises(RequestFailed) as failed:
                    await client.infer(payload)
                assert failed.value.status == "UNAUTHENTICATED"
            finally:
                await client.aclose()

        asyncio.run(go())
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _post(address, "/v2/models/identity_fp32/infer", b"{}", {})
