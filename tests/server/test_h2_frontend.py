"""HTTP/2-level behaviour of the h2 frontend (``--grpc-stack h2``) that the stack-parametrised tests do not reach.

Large messages through both flow-control windows, hundreds of streams on one connection, deadlines and
cancellation, compressed messages, long bidirectional streams, raw-socket abuse and oversized header
blocks. Real server processes, real gRPC clients plus a small raw HTTP/2 client for what gRPC clients
never send; loopback only.
"""

from __future__ import annotations

import asyncio
import gzip
import select
import socket
import struct
import time
import zlib

import grpc
import grpc.aio
import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from support.h2_attacker import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
    grpc_message,
)
from support.serve import ServerProcess
from tailmark.protos import inference_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

# --- servers ---


@pytest.fixture(scope="module")
def server(test_repository):
    with ServerProcess(test_repository, "--grpc-stack", "h2") as process:
        yield process
        assert process.alive(), "\n".join(process.lines[-30:])


@pytest.fixture(scope="module")
def limited(test_repository):
    """At most two calls at once (a call slot leaked by an abandoned stream shows up as RESOURCE_EXHAUSTED),
    and messages of at most 64 KiB."""
    flags = ("--grpc-stack", "h2", "--max-concurrent-rpcs", "2", "--max-message-bytes", "65536")
    with ServerProcess(test_repository, *flags) as process:
        yield process
        assert process.alive(), "\n".join(process.lines[-30:])


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target, options=UNLIMITED) as ch:
        yield ch


# --- helpers ---


def infer_request(data: np.ndarray, model: str = "identity", request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(data.shape))
    request.raw_input_contents.append(data.tobytes())
    return request


def output_of(response: pb.ModelInferResponse) -> np.ndarray:
    assert [o.name for o in response.outputs] == ["OUTPUT0"]
    return np.frombuffer(response.raw_output_contents[0], np.float32)


def unary(channel, path: str = INFER):
    return channel.unary_unary(
        path,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def still_serves(target: str) -> None:
    """A fresh tritonclient connection gets a correct inference answer."""
    with grpcclient.InferenceServerClient(target) as client:
        assert client.is_server_live()
        data = np.arange(7, dtype=np.float32)
        tensor = grpcclient.InferInput("INPUT0", [7], "FP32")
        tensor.set_data_from_numpy(data)
        np.testing.assert_array_equal(client.infer("identity", [tensor]).as_numpy("OUTPUT0"), data)


def stream_call(channel):
    return channel.stream_stream(
        STREAM,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )


async def _two_streams_and_a_refusal(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        data = np.ones(3, np.float32)
        streams = [stream_call(ch)() for _ in range(2)]
        for i, stream in enumerate(streams):  # each answers once: both hold a slot now
            await stream.write(infer_request(data, request_id=str(i)))
            answer = await stream.read()
            assert answer.infer_response.id == str(i) and not answer.error_message
        try:
            await unary(ch)(infer_request(data), timeout=10)
            refused = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            refused = exc.code()
        for stream in streams:
            await stream.done_writing()
            assert await stream.read() is grpc.aio.EOF
            assert await stream.code() == grpc.StatusCode.OK
        assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
        np.testing.assert_array_equal(output_of(await unary(ch)(infer_request(data), timeout=10)), data)


def both_slots_free(target: str) -> None:
    """On the ``limited`` server: two streams are admitted at once and a third call beside them is refused.

    Retried for a few seconds, as the server may not have read an abandoned call's end yet; a leaked slot
    never comes back.
    """
    deadline = time.monotonic() + 5
    while True:
        try:
            asyncio.run(_two_streams_and_a_refusal(target))
            return
        except (AssertionError, grpc.aio.AioRpcError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- a raw HTTP/2 client, for what gRPC clients never send ---


class RawH2:
    """One TCP connection speaking HTTP/2 by hand (hpack for header blocks)."""

    def __init__(self, target: str, *, handshake: bool = True) -> None:
        host, port = target.rsplit(":", 1)
        self.authority = target
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = bytearray()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        if handshake:
            self.send(PREFACE + frame(SETTINGS, 0, 0))

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def header_block(self, path: str = INFER, **extra: str) -> bytes:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *((name.replace("_", "-"), value) for name, value in extra.items()),
        ]
        return self.encoder.encode(headers)

    def request(self, stream_id: int, body: bytes, path: str = INFER, **extra: str) -> None:
        self.send(
            frame(HEADERS, END_HEADERS, stream_id, self.header_block(path, **extra))
            + frame(DATA, END_STREAM, stream_id, body)
        )

    def frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame from the server; None once it has closed the connection."""
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    kind, flags, stream_id = struct.unpack_from(">BBI", self.buffer, 3)
                    payload = bytes(self.buffer[9 : 9 + length])
                    del self.buffer[: 9 + length]
                    return kind, flags, stream_id & 0x7FFFFFFF, payload
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buffer += data

    def until_closed(self) -> list[tuple[int, int, int, bytes]]:
        """Every frame up to the server closing the connection (fails if it stays open 10 s)."""
        received = []
        while (item := self.frame()) is not None:
            received.append(item)
        return received

    def response(self, stream_id: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """(headers, DATA bytes, trailers) of one stream; trailers-only responses come back as trailers."""
        blocks: list[dict[str, str]] = []
        block = b""
        body = bytearray()
        while True:
            item = self.frame()
            assert item is not None, "the server closed the connection mid-response"
            kind, flags, sid, payload = item
            if kind == PING and not flags & ACK:
                self.send(frame(PING, ACK, 0, payload))
            if sid != stream_id:
                continue
            if kind == RST_STREAM and not blocks:
                raise AssertionError(f"stream reset: {int.from_bytes(payload, 'big')}")
            if kind in (HEADERS, CONTINUATION):
                block += payload
                if flags & END_HEADERS:
                    blocks.append(dict(self.decoder.decode(block)))
                    block = b""
            elif kind == DATA:
                body += payload
            if kind in (HEADERS, DATA) and flags & END_STREAM:
                break
        if len(blocks) == 1:
            return {}, bytes(body), blocks[0]
        return blocks[0], bytes(body), blocks[-1]


def parse_messages(body: bytes) -> list[bytes]:
    messages = []
    while body:
        assert body[0] == 0  # the server never compresses
        length = int.from_bytes(body[1:5], "big")
        messages.append(body[5 : 5 + length])
        body = body[5 + length :]
    return messages


def hpack_literal(name: str | int, value: str, *, index: bool = False) -> bytes:
    """One header as an HPACK literal (name by static-table index or new), with or without incremental indexing."""
    value_bytes = value.encode()
    assert len(value_bytes) < 127
    if isinstance(name, int):
        return bytes(((0x40 if index else 0x00) | name, len(value_bytes))) + value_bytes
    return bytes((0x40 if index else 0x00, len(name))) + name.encode() + bytes((len(value_bytes),)) + value_bytes


# --- 1. large messages through flow control ---


def test_64_mib_tensor_round_trip(channel):
    data = np.random.default_rng(0).random(16 << 20, dtype=np.float32)  # 64 MiB
    response = unary(channel)(infer_request(data), timeout=60)
    assert np.array_equal(output_of(response), data)


def test_concurrent_large_tensors_on_one_channel(channel):
    rng = np.random.default_rng(1)
    tensors = [rng.random((mib << 20) // 4, dtype=np.float32) for mib in (1, 8, 2, 7, 3, 6, 4, 5)]
    # sync futures: all eight streams interleave on the one connection
    futures = [unary(channel).future(infer_request(t), timeout=60) for t in tensors]
    for data, future in zip(tensors, futures, strict=True):
        assert np.array_equal(output_of(future.result()), data)


# --- 2. many streams on one connection ---


def test_500_calls_in_flight_on_one_connection(server):
    async def scenario():
        async with grpc.aio.insecure_channel(server.target) as ch:
            call = unary(ch)
            # every 25th goes to the sleep model (2 instances, 50 ms), so many streams stay open at once
            requests = [
                infer_request(np.full(i % 17 + 1, i, np.float32), "sleep" if i % 25 == 0 else "identity", str(i))
                for i in range(500)
            ]
            return requests, await asyncio.gather(*(call(r, timeout=30) for r in requests))

    requests, responses = asyncio.run(scenario())
    for request, response in zip(requests, responses, strict=True):
        assert response.id == request.id
        assert response.model_name == request.model_name
        np.testing.assert_array_equal(output_of(response), np.frombuffer(request.raw_input_contents[0], np.float32))


# --- 3. deadlines and cancellation ---


def test_deadline_exceeded_then_serving(server, channel):
    data = np.ones(4, np.float32)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as info:
            unary(channel)(infer_request(data, "sleep"), timeout=0.01)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    np.testing.assert_array_equal(output_of(unary(channel)(infer_request(data, "sleep"), timeout=10)), data)
    still_serves(server.target)


def test_server_enforces_grpc_timeout(server):
    """The server's own timer, not the client's: a raw request with grpc-timeout 10m gets status 4 from it."""
    with RawH2(server.target) as conn:
        body = grpc_message(infer_request(np.ones(2, np.float32), "sleep").SerializeToString())
        conn.request(1, body, grpc_timeout="10m")
        _, data, trailers = conn.response(1)
        assert trailers["grpc-status"] == "4", trailers  # this client has no timer: the status is the server's
        assert data == b""
        # the same connection goes on serving
        conn.request(3, grpc_message(infer_request(np.ones(2, np.float32)).SerializeToString()))
        _, data, trailers = conn.response(3)
        assert trailers["grpc-status"] == "0"
        np.testing.assert_array_equal(output_of(pb.ModelInferResponse.FromString(parse_messages(data)[0])), np.ones(2))


def test_client_cancel_mid_flight(server):
    async def scenario():
        async with grpc.aio.insecure_channel(server.target) as ch:
            data = np.full(5, 3, np.float32)
            pending = [unary(ch)(infer_request(data, "sleep"), timeout=10) for _ in range(6)]  # 150 ms of work
            stream = stream_call(ch)()
            await stream.write(infer_request(data, request_id="s"))
            assert (await stream.read()).infer_response.id == "s"
            await asyncio.sleep(0.02)
            cancelled = [call.cancel() for call in pending]
            assert stream.cancel()  # open until now: certainly mid-flight
            for call, was_cancelled in zip(pending, cancelled, strict=True):
                if was_cancelled:
                    with pytest.raises(asyncio.CancelledError):
                        await call
                else:  # it had already finished
                    np.testing.assert_array_equal(output_of(await call), data)
            with pytest.raises(asyncio.CancelledError):
                await stream.read()
            np.testing.assert_array_equal(output_of(await unary(ch)(infer_request(data, "sleep"), timeout=10)), data)

    asyncio.run(scenario())
    still_serves(server.target)


def test_abandoned_calls_free_their_slots(limited):
    """Deadlines, client cancels and connections dropped mid-body each release the call's concurrency slot."""
    both_slots_free(limited.target)
    data = np.ones(4, np.float32)
    with grpc.insecure_channel(limited.target) as ch:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                unary(ch)(infer_request(data, "sleep"), timeout=0.005)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def cancel():
        async with grpc.aio.insecure_channel(limited.target) as ch:
            for _ in range(3):
                call = unary(ch)(infer_request(data, "sleep"), timeout=10)
                await asyncio.sleep(0.01)
                call.cancel()
            stream = stream_call(ch)()
            await stream.write(infer_request(data))
            await stream.read()
            assert stream.cancel()

    asyncio.run(cancel())
    for _ in range(3):  # HEADERS and part of a message, then the connection drops
        with RawH2(limited.target) as conn:
            body = grpc_message(infer_request(np.ones(1000, np.float32)).SerializeToString())
            conn.send(frame(HEADERS, END_HEADERS, 1, conn.header_block()) + frame(DATA, 0, 1, body[:2000]))
    both_slots_free(limited.target)


# --- 4. compressed requests ---


@pytest.mark.parametrize("algorithm", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_compressed_requests(server, algorithm):
    data = np.arange(100_000, dtype=np.float32) % 7
    with grpc.insecure_channel(server.target, options=UNLIMITED, compression=algorithm) as ch:
        np.testing.assert_array_equal(output_of(unary(ch)(infer_request(data), timeout=10)), data)
        stream = ch.stream_stream(
            STREAM,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        responses = list(stream(iter([infer_request(data * i, request_id=str(i)) for i in range(5)]), timeout=10))
    assert sorted(r.infer_response.id for r in responses) == [str(i) for i in range(5)]
    for r in responses:
        assert not r.error_message
        np.testing.assert_array_equal(output_of(r.infer_response), data * int(r.infer_response.id))


def test_raw_gzip_message(server):
    """A message with the compressed flag set really is inflated (the gRPC client may skip compressing)."""
    data = np.arange(10, dtype=np.float32)
    with RawH2(server.target) as conn:
        conn.request(
            1, grpc_message(gzip.compress(infer_request(data).SerializeToString()), True), grpc_encoding="gzip"
        )
        _, body, trailers = conn.response(1)
        assert trailers["grpc-status"] == "0", trailers
        np.testing.assert_array_equal(output_of(pb.ModelInferResponse.FromString(parse_messages(body)[0])), data)
        conn.request(3, grpc_message(b"not gzip at all", True), grpc_encoding="gzip")
        _, body, trailers = conn.response(3)
        assert trailers["grpc-status"] == "13" and "decompress" in trailers["grpc-message"], trailers
        truncated = gzip.compress(infer_request(data).SerializeToString())[:-12]
        conn.request(5, grpc_message(truncated, True), grpc_encoding="gzip")
        _, body, trailers = conn.response(5)
        assert trailers["grpc-status"] == "13" and "decompress" in trailers["grpc-message"], trailers
        conn.request(7, grpc_message(zlib.compress(b"x"), True), grpc_encoding="br")
        _, body, trailers = conn.response(7)
        assert trailers["grpc-status"] == "12", trailers


def test_message_size_limit_applies_after_decompression(limited):
    """--max-message-bytes bounds the inflated message too (1 MB of zeros gzips to about 1 KB), as grpc's servers do."""
    with grpc.insecure_channel(limited.target, compression=grpc.Compression.Gzip) as ch:
        with pytest.raises(grpc.RpcError) as info:
            unary(ch)(infer_request(np.zeros(250_000, np.float32)), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        small = np.arange(1000, dtype=np.float32)
        np.testing.assert_array_equal(output_of(unary(ch)(infer_request(small), timeout=10)), small)


def test_message_size_limit_applies_to_responses(limited):
    """A request just under --max-message-bytes whose echo is a few bytes over it (the response names the
    model version): RESOURCE_EXHAUSTED, as grpc's servers do with what they send, and the server goes on."""
    request = infer_request(np.zeros(16_300, np.float32))
    while request.ByteSize() < 65_536:  # the largest request that still fits, to the byte
        request.id += "x"
    request.id = request.id[:-1]
    assert request.ByteSize() <= 65_536
    with grpc.insecure_channel(limited.target, options=UNLIMITED) as ch:
        with pytest.raises(grpc.RpcError) as info:
            unary(ch)(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert "response message larger than 65536 bytes" in info.value.details()
        small = np.arange(1000, dtype=np.float32)
        np.testing.assert_array_equal(output_of(unary(ch)(infer_request(small), timeout=10)), small)


# --- 5. a long bidirectional stream ---


def test_a_stream_that_outruns_its_model_is_held_back_by_its_window(server):
    """A client streaming ~64 KB requests to the 50 ms sleep model as fast as the server's flow-control windows
    allow: the server reads no further than its in-flight cap plus one stream window (about 4 MiB) ahead of
    the model, so within 2 s the client gets to send tens of MiB at most, not whatever loopback carries."""
    message = grpc_message(infer_request(np.zeros(16_000, np.float32), model="sleep").SerializeToString())
    with RawH2(server.target, handshake=False) as conn:
        big = struct.pack(">HI", 0x4, 2**31 - 1)  # our receive window: the server's answers never wait on us
        conn.send(PREFACE + frame(SETTINGS, 0, 0, big) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 65_536)))
        conn.send(frame(HEADERS, END_HEADERS, 1, conn.header_block(STREAM)))
        windows = {"connection": 65_535, "stream": 65_535}
        sent, deadline = 0, time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if select.select([conn.sock], [], [], 0.001)[0]:  # sends stay blocking: only reads must not wait
                conn.buffer += conn.sock.recv(1 << 20)
            while len(conn.buffer) >= 9 and len(conn.buffer) >= 9 + int.from_bytes(conn.buffer[:3], "big"):
                kind, flags, stream_id, payload = conn.frame()
                if kind == SETTINGS and not flags & ACK:
                    for offset in range(0, len(payload), 6):
                        key, value = struct.unpack_from(">HI", payload, offset)
                        if key == 0x4:
                            windows["stream"] += value - 65_535
                    conn.send(frame(SETTINGS, ACK, 0))
                elif kind == WINDOW_UPDATE:
                    windows["connection" if stream_id == 0 else "stream"] += struct.unpack(">I", payload)[0]
            while min(windows.values()) >= len(message):
                conn.send(frame(DATA, 0, 1, message))
                sent += len(message)
                windows["connection"] -= len(message)
                windows["stream"] -= len(message)
    # the in-flight cap's messages, the ~80 the model finishes in 2 s, one stream window (4 MiB), and slack
    # (measured: 38 MiB; without the window held back: 425 MiB)
    bound = (512 + 200) * len(message) + (8 << 20)
    assert 1 << 20 < sent <= bound, f"{sent / 2**20:.1f} MiB sent in 2 s (bound {bound / 2**20:.1f} MiB)"
    still_serves(server.target)


def test_stream_of_200_with_a_malformed_message(server):
    """Every id answered exactly once; an undecodable message in the middle gets an in-band error only."""
    sizes = [(i % 9 + 1) if i % 50 else (1 << 18) for i in range(200)]  # a few 1 MiB messages among small ones

    def messages():
        for i, size in enumerate(sizes):
            yield infer_request(np.full(size, i, np.float32), request_id=f"r{i}").SerializeToString()
            if i == 100:
                yield b"\xff\xff\xff not a protobuf"

    with grpc.insecure_channel(server.target, options=UNLIMITED) as ch:
        stream = ch.stream_stream(STREAM, response_deserializer=pb.ModelStreamInferResponse.FromString)
        responses = list(stream(messages(), timeout=30))
    errors = [r for r in responses if r.error_message]
    assert len(errors) == 1 and "malformed" in errors[0].error_message
    answered = [r.infer_response.id for r in responses if not r.error_message]
    assert sorted(answered) == sorted(f"r{i}" for i in range(200))
    for r in responses:
        if not r.error_message:
            i = int(r.infer_response.id[1:])
            np.testing.assert_array_equal(output_of(r.infer_response), np.full(sizes[i], i, np.float32))


# --- 6. raw-socket abuse ---


def test_garbage_instead_of_preface(server):
    with RawH2(server.target, handshake=False) as conn:
        conn.send(b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 4)  # something like a TLS ClientHello
        received = conn.until_closed()
    assert {kind for kind, *_ in received} <= {SETTINGS, WINDOW_UPDATE}  # its greeting at most, then it hangs up
    still_serves(server.target)


def test_http1_request(server):
    with RawH2(server.target, handshake=False) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = conn.until_closed()
    assert {kind for kind, *_ in received} <= {SETTINGS, WINDOW_UPDATE}
    still_serves(server.target)


def test_frame_with_absurd_length(server):
    with RawH2(server.target) as conn:
        conn.send(b"\xff\xff\xff" + bytes((DATA, 0)) + struct.pack(">I", 1) + b"\x00" * 100)
        received = conn.until_closed()
    goaway = [payload for kind, _, _, payload in received if kind == GOAWAY]
    assert len(goaway) == 1 and int.from_bytes(goaway[0][4:8], "big") == FRAME_SIZE_ERROR
    still_serves(server.target)


def test_connections_closed_at_once(server):
    for _ in range(20):
        socket.create_connection(("127.0.0.1", server.port)).close()
    with RawH2(server.target):
        pass
    still_serves(server.target)


def test_connection_dropped_mid_body(server):
    for reset in (False, True):
        with RawH2(server.target) as conn:
            body = grpc_message(infer_request(np.ones(50_000, np.float32)).SerializeToString())
            conn.send(frame(HEADERS, END_HEADERS, 1, conn.header_block()) + frame(DATA, 0, 1, body[:10_000]))
            if reset:  # RST instead of FIN
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    still_serves(server.target)


def test_stream_reset_mid_body_leaves_the_connection_serving(server):
    with RawH2(server.target) as conn:
        body = grpc_message(infer_request(np.ones(1000, np.float32)).SerializeToString())
        conn.send(frame(HEADERS, END_HEADERS, 1, conn.header_block()) + frame(DATA, 0, 1, body[:100]))
        conn.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) + frame(DATA, END_STREAM, 1, body[100:]))
        conn.request(3, body)
        _, data, trailers = conn.response(3)
        assert trailers["grpc-status"] == "0"
        np.testing.assert_array_equal(
            output_of(pb.ModelInferResponse.FromString(parse_messages(data)[0])), np.ones(1000)
        )
    still_serves(server.target)


# --- 7. header edge cases ---


def test_large_custom_metadata(channel):
    data = np.arange(3, dtype=np.float32)
    for size in (8 << 10, 24 << 10):
        metadata = (("x-large", "v" * size), ("x-large-bin", bytes(range(256)) * (size // 256)))
        np.testing.assert_array_equal(
            output_of(unary(channel)(infer_request(data), metadata=metadata, timeout=10)), data
        )


def test_header_block_split_into_continuations(server):
    with RawH2(server.target) as conn:
        for stream_id in (1, 3):  # the second block refers to the dynamic table the first one filled
            block = conn.header_block(x_padding="p" * 9000)
            pieces = [block[i : i + 1000] for i in range(0, len(block), 1000)]
            conn.send(
                frame(HEADERS, 0, stream_id, pieces[0])
                + b"".join(frame(CONTINUATION, 0, stream_id, p) for p in pieces[1:-1])
                + frame(CONTINUATION, END_HEADERS, stream_id, pieces[-1])
                + frame(
                    DATA, END_STREAM, stream_id, grpc_message(infer_request(np.ones(2, np.float32)).SerializeToString())
                )
            )
            _, data, trailers = conn.response(stream_id)
            assert trailers["grpc-status"] == "0", trailers
            assert len(parse_messages(data)) == 1


def test_oversized_metadata_fails_only_its_call(server):
    """Metadata beyond the server's header-list limit fails that call (as grpc's servers do), not the connection."""

    async def scenario():
        async with grpc.aio.insecure_channel(server.target) as ch:
            call = unary(ch)
            data = np.ones(3, np.float32)
            slow = asyncio.ensure_future(call(infer_request(data, "sleep"), timeout=10))
            await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(infer_request(data), metadata=(("x-huge", "h" * (200 << 10)),), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
            np.testing.assert_array_equal(output_of(await slow), data)
            np.testing.assert_array_equal(output_of(await call(infer_request(data), timeout=10)), data)

    asyncio.run(scenario())


def test_cached_header_blocks_follow_the_dynamic_table(server):
    """The same block bytes mean something else once the dynamic table changes; the server's memo must notice.

    With a one-entry table, a block that adds two entries evicts the old one before the second is made, and
    the new entry can sit where the old one was freed: a change the server once mistook for none.
    """
    path = hpack_literal(4, "/inference.GRPCInferenceService/ServerLive")  # not indexed
    common = b"\x83\x86" + path + hpack_literal("content-type", "application/grpc") + hpack_literal("te", "trailers")
    reuse = common + b"\xbe"  # the newest dynamic-table entry, whatever it is now
    with RawH2(server.target) as conn:

        def status(stream_id: int, block: bytes) -> str:
            conn.send(
                frame(HEADERS, END_HEADERS, stream_id, block) + frame(DATA, END_STREAM, stream_id, grpc_message(b""))
            )
            _, body, trailers = conn.response(stream_id)
            assert trailers["grpc-status"] != "0" or parse_messages(body) == [b"\x08\x01"]  # live: true
            return trailers["grpc-status"]

        table_of_100_bytes = b"\x3f\x45"  # dynamic table size update: one grpc-encoding entry fits
        assert status(1, table_of_100_bytes + common + hpack_literal("grpc-encoding", "identity", index=True)) == "0"
        assert status(3, reuse) == "0"  # grpc-encoding: identity, from the table
        filler_then_bogus = hpack_literal("x-filler", "f" * 30, index=True) + hpack_literal(
            "grpc-encoding", "bogus-encoding", index=True
        )
        assert status(5, common + filler_then_bogus) == "12"
        assert status(7, reuse) == "12"  # now grpc-encoding: bogus-encoding
        assert status(9, common + hpack_literal("grpc-encoding", "identity", index=True)) == "0"
        assert status(11, reuse) == "0"


# --- 8. HTTP/2 and gRPC framing details ---


def test_server_keeps_within_flow_control_windows(server):
    """Tiny windows, credited bit by bit, shrunk mid-response by SETTINGS: never a DATA byte beyond them."""
    data = np.arange(60_000, dtype=np.float32)  # 240 KB response
    initial = 1000
    with RawH2(server.target, handshake=False) as conn:
        conn.send(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, initial)))
        conn.request(1, grpc_message(infer_request(data).SerializeToString()))
        stream_window, connection_window = initial, 65_535
        body = bytearray()
        shrink_sent = shrunk = False
        while True:
            item = conn.frame()
            assert item is not None
            kind, flags, stream_id, payload = item
            if kind == SETTINGS and flags & ACK and shrink_sent and not shrunk:
                stream_window -= initial - 100  # applies to DATA the server sends after acknowledging
                shrunk = True
            if kind == DATA and stream_id == 1:
                assert len(payload) <= min(stream_window, connection_window)
                stream_window -= len(payload)
                connection_window -= len(payload)
                body += payload
            if kind == HEADERS and stream_id == 1 and flags & END_STREAM:
                break
            if len(body) > 100_000 and not shrink_sent:
                conn.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 100)))
                shrink_sent = True
            if stream_window < 500:
                conn.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 3000)))
                stream_window += 3000
            if connection_window < 20_000:
                conn.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 40_000)))
                connection_window += 40_000
        assert shrunk
        trailers = dict(conn.decoder.decode(payload))
        assert trailers["grpc-status"] == "0"
        np.testing.assert_array_equal(output_of(pb.ModelInferResponse.FromString(parse_messages(bytes(body))[0])), data)


def test_ping_and_client_goaway(server):
    """PINGs are acknowledged; after the client's GOAWAY its open call still completes, then the server hangs up."""
    with RawH2(server.target) as conn:
        conn.send(frame(PING, 0, 0, b"tailmark"))
        conn.request(1, grpc_message(infer_request(np.ones(3, np.float32), "sleep").SerializeToString()))
        conn.send(frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
        received = conn.until_closed()
    assert (PING, ACK, 0, b"tailmark") in received
    ends = [(kind, flags) for kind, flags, stream_id, _ in received if stream_id == 1 and flags & END_STREAM]
    assert ends == [(HEADERS, END_STREAM | END_HEADERS)]
    data = b"".join(p for kind, _, stream_id, p in received if kind == DATA and stream_id == 1)
    np.testing.assert_array_equal(output_of(pb.ModelInferResponse.FromString(parse_messages(data)[0])), np.ones(3))


def test_message_framing_errors_and_stream_deadline(server):
    one = grpc_message(infer_request(np.ones(2, np.float32), "sleep", "a").SerializeToString())
    with RawH2(server.target) as conn:
        conn.send(frame(HEADERS, END_HEADERS, 1, conn.header_block()) + frame(DATA, END_STREAM, 1, one + one))
        _, _, trailers = conn.response(1)
        assert trailers["grpc-status"] == "13" and "exactly one" in trailers["grpc-message"]
        # a stream half-closed in the middle of its second message fails; it is not silently cut short
        conn.send(frame(HEADERS, END_HEADERS, 3, conn.header_block(STREAM)) + frame(DATA, END_STREAM, 3, one + one[:7]))
        _, _, trailers = conn.response(3)
        assert trailers["grpc-status"] == "13" and "inside a message" in trailers["grpc-message"], trailers
        # a stream's deadline: its one answer (50 ms) goes out, then the server ends it at 150 ms
        start = time.monotonic()
        conn.send(
            frame(HEADERS, END_HEADERS, 5, conn.header_block(STREAM, grpc_timeout="150m")) + frame(DATA, 0, 5, one)
        )
        _, data, trailers = conn.response(5)
        assert trailers["grpc-status"] == "4", trailers
        assert 0.14 < time.monotonic() - start < 2
        answer = pb.ModelStreamInferResponse.FromString(parse_messages(data)[0])
        assert answer.infer_response.id == "a" and not answer.error_message
    still_serves(server.target)


def test_stream_error_behind_blocked_responses_keeps_its_status(server):
    """A stream fails (an undecompressable message) while its earlier answer waits for flow-control window:
    the answer goes out, then the error status, not OK."""
    ok = grpc_message(infer_request(np.ones(2, np.float32), request_id="a").SerializeToString())
    with RawH2(server.target, handshake=False) as conn:
        conn.send(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 10)))  # 10-byte stream windows
        conn.send(
            frame(HEADERS, END_HEADERS, 1, conn.header_block(STREAM, grpc_encoding="gzip")) + frame(DATA, 0, 1, ok)
        )
        while (item := conn.frame()) is not None and not (item[0] == DATA and item[2] == 1):
            pass  # until the answer has started: the rest of it is blocked
        conn.send(frame(DATA, END_STREAM, 1, grpc_message(b"not gzip", compressed=True)))
        time.sleep(0.05)  # the call's handler sees the end of its input before the window opens
        conn.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)))
        _, data, trailers = conn.response(1)
    assert trailers["grpc-status"] == "13" and "decompress" in trailers["grpc-message"], trailers
    assert len(item[3]) + len(data) > 10  # more than the first window's worth: the rest came before the status
    answer = pb.ModelStreamInferResponse.FromString(parse_messages(item[3] + data)[0])
    assert answer.infer_response.id == "a"
