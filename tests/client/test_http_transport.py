"""client/http_transport.py against a real HTTP/1.1 peer on a loopback port: a small h11 echo server in a
thread, which answers each REST infer request with its own inputs as outputs (binary when asked for binary,
JSON data otherwise). It checks the transport's mechanics (conversion of every datatype both ways, keep-alive
and pool growth, timeouts, a server that closes, error bodies, headers, TLS and mutual TLS). Interoperability
with a real KServe-v2 server is tested against Triton's HTTP frontend in tests/server/test_real_triton.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time

import h11
import ml_dtypes
import numpy as np
import pytest

from support.pki import make_pki
from tailmark.client.errors import ConfigError, ModelNotFound, TlsError, Unreachable
from tailmark.client.http_rest import rest_request
from tailmark.client.http_transport import HttpTransport, parse_target, status_name
from tailmark.client.response_check import output_arrays
from tailmark.client.transport import RequestFailed, TlsSettings
from tailmark.deploy.server_process import free_port
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import encode_raw

METADATA = {
    "name": "echo",
    "versions": ["1"],
    "platform": "test",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
}


def _echo(request: h11.Request, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = dict(request.headers)
    header_length = int(headers.get(b"inference-header-content-length", len(body)))
    document = json.loads(body[:header_length])
    binary = (document.get("parameters") or {}).get("binary_data_output", False)
    offset = header_length
    outputs, raws = [], []
    for tensor in document["inputs"]:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        output = {"name": tensor["name"], "datatype": tensor["datatype"], "shape": tensor["shape"]}
        if size is not None:
            raw = body[offset : offset + size]
            offset += size
            if binary:
                output["parameters"] = {"binary_data_size": size}
                raws.append(raw)
            else:
                raise AssertionError("the transport asks for binary outputs whenever it sends binary inputs")
        else:
            output["data"] = tensor["data"]
        outputs.append(output)
    answer = {"model_name": "echo", "model_version": "1", "outputs": outputs}
    if "id" in document:
        answer["id"] = document["id"]
    head = json.dumps(answer).encode()
    extra = [(b"inference-header-content-length", b"%d" % len(head))] if raws else []
    return 200, [(b"content-type", b"application/octet-stream"), *extra], head + b"".join(raws)


class EchoServer:
    """A KServe-v2 REST echo on 127.0.0.1, in its own thread and loop. Model names pick a behaviour: ``slow``
    answers after 0.5 s, ``down`` is 503, ``closing`` answers with ``connection: close``, ``dropping`` closes
    a connection without answering its second request (an idle timer firing as it arrives); /config is 404
    (as on KServe)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.seen_headers: list[dict[bytes, bytes]] = []
        self._ssl = ssl_context
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = h11.Connection(h11.SERVER)
        request, chunks, served = None, [], 0
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    connection.receive_data(data)
                    if not data:
                        return
                elif type(event) is h11.Request:
                    request, chunks = event, []
                elif type(event) is h11.Data:
                    chunks.append(bytes(event.data))
                elif type(event) is h11.EndOfMessage:
                    status, headers, body = await self._answer(request, b"".join(chunks), served)
                    served += 1
                    writer.write(connection.send(h11.Response(status_code=status, headers=headers)))
                    writer.write(connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
                    await writer.drain()
                    if connection.our_state is h11.MUST_CLOSE:
                        return
                    connection.start_next_cycle()
                else:
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: h11.Request, body: bytes, served: int):
        self.seen_headers.append(dict(request.headers))
        path = request.target.decode()
        model = path.split("/")[3] if path.startswith("/v2/models/") else ""
        if path == "/v2/health/ready":
            status, headers, data = 200, [], b""
        elif path == "/v2/models/echo":
            status, headers, data = 200, [], json.dumps(METADATA).encode()
        elif model == "dropping" and served > 0:  # closes a reused connection without answering
            raise ConnectionAbortedError
        elif model in ("echo", "slow", "closing", "dropping") and path.endswith("/infer"):
            if model == "slow":
                await asyncio.sleep(0.5)
            status, headers, data = _echo(request, body)
            if model == "closing":
                headers.append((b"connection", b"close"))
        else:
            status = 503 if model == "down" else 404
            data = json.dumps({"error": "model is loading" if status == 503 else f"no route {path}"}).encode()
            headers = []
        return status, [*headers, (b"content-length", b"%d" % len(data))], data

    @property
    def target(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def shutdown():
            self.server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def echo():
    server = EchoServer()
    yield server
    server.close()


ARRAYS = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([1, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([1, 2**63 + 5], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-3, 3], dtype=np.int16),
    "INT32": np.array([[-(2**31), 5], [6, 7]], dtype=np.int32),
    "INT64": np.array([-(2**62), 2**62], dtype=np.int64),
    "FP16": np.array([0.5, -1.25, 65504], dtype=np.float16),
    "BF16": np.array([1.5, -2.0, 3.0e38], dtype=ml_dtypes.bfloat16),
    "FP32": np.array([[0.1, -2.5e-8], [3.0e38, 7.0]], dtype=np.float32),
    "FP64": np.array([np.pi, -1e-300]),
    "BYTES": np.array([b"tail", b"", b"mark \xc3\xa9"], dtype=object),
}


def _request(model: str = "echo", request_id: str = "r1") -> bytes:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    for datatype, array in ARRAYS.items():
        request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(encode_raw(array))
    return request.SerializeToString()


@pytest.mark.parametrize("json_tensors", [False, True], ids=["binary", "json"])
def test_every_datatype_round_trips(echo, json_tensors):
    """Each datatype goes out as binary or JSON and comes back, via the echo, as the same tensor in a
    ModelInferResponse (the answer's id and model too)."""

    async def go():
        transport = await HttpTransport.connect(echo.target, json_tensors=json_tensors)
        try:
            response = pb.ModelInferResponse.FromString(await transport.infer(_request()))
        finally:
            await transport.aclose()
        assert (response.model_name, response.model_version, response.id) == ("echo", "1", "r1")
        assert len(response.raw_output_contents) == len(ARRAYS)
        for output in response.outputs:
            assert "binary_data_size" not in output.parameters
        arrays = output_arrays(response)
        for datatype, array in ARRAYS.items():
            got = arrays[f"in_{datatype}"]
            assert got.shape == array.shape, datatype
            assert got.dtype == array.dtype, datatype
            np.testing.assert_array_equal(got, array, err_msg=datatype)

    asyncio.run(go())


def test_the_rest_form_is_built_once_per_payload():
    path, body, header_length = rest_request(_request(), json_tensors=False)
    assert path == "/v2/models/echo/infer"
    header = json.loads(body[:header_length])
    assert header["parameters"] == {"binary_data_output": True}
    assert [t["parameters"]["binary_data_size"] for t in header["inputs"]] == [
        len(encode_raw(a)) for a in ARRAYS.values()
    ]
    assert len(body) == header_length + sum(len(encode_raw(a)) for a in ARRAYS.values())
    request = pb.ModelInferRequest(model_name="m", model_version="2")
    request.outputs.add(name="y")
    request.inputs.add(name="x", datatype="INT32", shape=[2]).contents.int_contents.extend([4, 5])
    path, body, header_length = rest_request(request.SerializeToString(), json_tensors=True)
    assert path == "/v2/models/m/versions/2/infer" and header_length is None
    assert json.loads(body) == {
        "inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [4, 5]}],
        "outputs": [{"name": "y"}],
    }

    async def cached(echo_target: str):
        transport = await HttpTransport.connect(echo_target)
        payload = _request()
        try:
            await transport.infer(payload)
            first = transport._requests[payload]
            await transport.infer(payload)
            assert transport._requests[payload] is first and len(transport._requests) == 1
        finally:
            await transport.aclose()

    server = EchoServer()
    try:
        asyncio.run(cached(server.target))
    finally:
        server.close()


def test_keep_alive_and_the_pool_grows_instead_of_queueing(echo):
    async def go():
        before = echo.connections
        transport = await HttpTransport.connect(echo.target, connections=2)
        try:
            for _ in range(5):
                await transport.infer(_request())
            assert echo.connections - before == 2  # sequential requests reuse the connections
            started = time.perf_counter()
            await asyncio.gather(*(transport.infer(_request("slow")) for _ in range(6)))
            elapsed = time.perf_counter() - started
            assert elapsed < 1.0  # six 0.5 s requests at once, not three rounds over two connections
            assert transport.connections_opened == 6
        finally:
            await transport.aclose()

    asyncio.run(go())


def test_errors_timeouts_and_closing_servers(echo):
    async def go():
        transport = await HttpTransport.connect(echo.target, timeout_s=5)
        try:
            with pytest.raises(RequestFailed) as failed:
                await transport.infer(_request("down"))
            assert (failed.value.status, failed.value.message) == ("UNAVAILABLE", "model is loading")
            with pytest.raises(RequestFailed) as failed:
                await transport.infer(_request("slow"), timeout_s=0.1)
            assert failed.value.status == "DEADLINE_EXCEEDED"
            for _ in range(3):  # the server closes after each answer: a new connection each time
                assert pb.ModelInferResponse.FromString(await transport.infer(_request("closing"))).id == "r1"
            assert pb.ModelInferResponse.FromString(await transport.infer(_request())).id == "r1"
            assert await transport.server_ready()
            info = await transport.model_info("echo")
            assert info.config_offered is False and info.max_batch_size == 0  # /config is 404 here
            assert [t.name for t in info.inputs] == ["x"]
            with pytest.raises(ModelNotFound):
                await transport.model_info("nothing")
        finally:
            await transport.aclose()

    asyncio.run(go())
    assert [status_name(s) for s in (400, 404, 500, 503, 504, 418)] == [
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "INTERNAL",
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "UNKNOWN",
    ]


def test_a_reused_connection_closed_under_a_request_is_retried_once(echo):
    async def go():
        transport = await HttpTransport.connect(echo.target)
        try:
            for _ in range(3):  # each second request on a connection is dropped unanswered, then sent again
                assert pb.ModelInferResponse.FromString(await transport.infer(_request("dropping"))).id == "r1"
            assert transport.retries == 2 and transport.connections_opened == 3
        finally:
            await transport.aclose()

    asyncio.run(go())


def test_headers_are_sent_on_every_request(echo):
    async def go():
        transport = await HttpTransport.connect(echo.target, metadata=[("Authorization", "Bearer s3cret")])
        try:
            await transport.infer(_request())
            await transport.model_info("echo")
        finally:
            await transport.aclose()

    asyncio.run(go())
    assert echo.seen_headers[-1][b"authorization"] == b"Bearer s3cret"
    assert echo.seen_headers[-2][b"authorization"] == b"Bearer s3cret"


def test_targets_and_unreachable_endpoints():
    assert parse_target("http://h:8000", None) == ("h", 8000, False)
    assert parse_target("h:8000", None) == ("h", 8000, False)
    assert parse_target("https://h", None) == ("h", 443, True)
    assert parse_target("h:1", TlsSettings()) == ("h", 1, True)
    with pytest.raises(ConfigError):
        parse_target("http://h:1", TlsSettings())
    with pytest.raises(ConfigError):
        parse_target("ftp://h:1", None)
    with pytest.raises(Unreachable):  # nothing listens there
        asyncio.run(HttpTransport.connect(f"http://127.0.0.1:{free_port()}", connect_timeout_s=2))


def test_tls_and_mutual_tls(tmp_path):
    pki = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    server = EchoServer(context)

    async def go():
        mutual = TlsSettings(pki / "ca.pem", pki / "client.pem", pki / "client.key")
        transport = await HttpTransport.connect(server.target, tls=mutual)
        try:
            assert pb.ModelInferResponse.FromString(await transport.infer(_request())).id == "r1"
        finally:
            await transport.aclose()
        with pytest.raises(TlsError):  # the system roots do not trust the test CA
            await HttpTransport.connect(server.target, connect_timeout_s=5)

    try:
        asyncio.run(go())
    finally:
        server.close()


def test_a_request_past_its_deadline_stops_sending_at_once():
    """HTTP/1.1 cannot cancel a request, so its connection goes; it must go at once (abort), not after writing
    out the rest of a 64 MiB body nobody waits for. A peer that reads nothing until after the deadline then
    reads to the end gets only what the kernel buffered, far less than the body."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    release, received = threading.Event(), []

    def peer() -> None:
        connection, _ = listener.accept()
        with connection:
            release.wait(10)
            connection.settimeout(5)
            total = 0
            try:
                while chunk := connection.recv(1 << 20):
                    total += len(chunk)
            except (ConnectionResetError, TimeoutError):
                pass
            received.append(total)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    request = pb.ModelInferRequest(model_name="echo", id="big")
    request.inputs.add(name="x", datatype="FP32", shape=[1 << 24])
    request.raw_input_contents.append(bytes(4 << 24))

    async def go():
        transport = await HttpTransport.connect(f"127.0.0.1:{port}")
        try:
            with pytest.raises(RequestFailed) as failed:
                await transport.infer(request.SerializeToString(), timeout_s=0.2)
            assert failed.value.status == "DEADLINE_EXCEEDED"
            release.set()
            await asyncio.sleep(1.0)  # the loop lives on: a closing transport would go on writing meanwhile
        finally:
            await transport.aclose()

    try:
        asyncio.run(go())
        thread.join(10)
    finally:
        listener.close()
    assert received and received[0] < (4 << 24) // 2, received
