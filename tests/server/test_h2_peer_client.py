"""A real ``tailmark serve`` (h2 stack) against an independent HTTP/2 client: python-hyper's ``h2`` on a plain
socket, speaking gRPC by hand (unary calls, many streams at once, a large answer through flow control)."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events
import numpy as np
import pytest

from support.serve import ServerProcess
from tailmark.protos import inference_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def server(test_repository):
    with ServerProcess(test_repository, "--grpc-stack", "h2") as process:
        yield process
        assert process.alive(), "\n".join(process.lines[-30:])


class HyperGrpcClient:
    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.authority = target
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.ended: dict[int, tuple[dict, bytearray, dict]] = {}
        self.streams: dict[int, tuple[dict, bytearray, dict]] = {}
        self.terminated = None

    def start(self, method: str, message: bytes) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", SERVICE + method),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        self.conn.send_headers(stream_id, headers)
        body = struct.pack(">BI", 0, len(message)) + message
        step = self.conn.max_outbound_frame_size  # within the server's windows: callers keep bodies small
        for offset in range(0, len(body), step):
            last = offset + step >= len(body)
            self.conn.send_data(stream_id, body[offset : offset + step], end_stream=last)
        self.streams[stream_id] = ({}, bytearray(), {})
        self.sock.sendall(self.conn.data_to_send())
        return stream_id

    def wait(self, stream_ids: list[int]) -> None:
        while not all(sid in self.ended for sid in stream_ids):
            data = self.sock.recv(1 << 20)
            assert data, "the server closed the connection"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.streams[event.stream_id][0].update(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    self.streams[event.stream_id][1].extend(event.data)
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    self.streams[event.stream_id][2].update(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    self.ended[event.stream_id] = self.streams.pop(event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.terminated = event
            self.sock.sendall(self.conn.data_to_send())

    def answer(self, stream_id: int, response_type):
        headers, body, trailers = self.ended[stream_id]
        assert headers[":status"] == "200" and trailers["grpc-status"] == "0", (headers, trailers)
        assert body[0] == 0 and struct.unpack(">I", body[1:5])[0] == len(body) - 5
        return response_type.FromString(bytes(body[5:]))


def infer(values: np.ndarray, request_id: str = "") -> bytes:
    request = pb.ModelInferRequest(model_name="identity", id=request_id)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(values.shape))
    request.raw_input_contents.append(values.astype(np.float32).tobytes())
    return request.SerializeToString()


def test_h2_client_against_our_server(server):
    client = HyperGrpcClient(server.target)
    try:
        live = client.start("ServerLive", pb.ServerLiveRequest().SerializeToString())
        client.wait([live])
        assert client.answer(live, pb.ServerLiveResponse).live
        ids = {client.start("ModelInfer", infer(np.full(8, i), str(i))): i for i in range(150)}  # 150 at once
        client.wait(list(ids))
        for stream_id, i in ids.items():
            response = client.answer(stream_id, pb.ModelInferResponse)
            assert response.id == str(i)
            assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [float(i)] * 8
        big = np.arange(3 << 18, dtype=np.float32)  # 3 MiB each way; back through h2's 64 KiB default windows
        stream_id = client.start("ModelInfer", infer(big))
        client.wait([stream_id])
        response = client.answer(stream_id, pb.ModelInferResponse)
        np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), big)
        assert client.conn.remote_settings.max_concurrent_streams == 1000
        assert client.terminated is None
    finally:
        client.sock.close()
