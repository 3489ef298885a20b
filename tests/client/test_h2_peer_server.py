"""tailmark's h2 client transport against an independent HTTP/2 server: python-hyper's ``h2`` on an asyncio
socket on 127.0.0.1, answering gRPC calls by hand (echo, errors, large answers through flow control)."""

from __future__ import annotations

import asyncio
import struct

import h2.config
import h2.connection
import h2.events
import pytest
import uvloop

from tailmark.client.h2_transport import H2Transport
from tailmark.client.transport import RequestFailed


class HyperGrpcServer(asyncio.Protocol):
    """``/echo`` answers the request message reversed, ``/big`` 3 MiB, ``/missing`` NOT_FOUND (trailers only),
    ``/reset`` resets the stream, ``/slow`` never answers."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.requests: dict[int, tuple[str, bytearray]] = {}
        self.pending: dict[int, memoryview] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = (dict(event.headers)[":path"], bytearray())
            elif isinstance(event, h2.events.DataReceived):
                self.requests[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.answer(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                self.send_pending()
        self.transport.write(self.conn.data_to_send())

    def answer(self, stream_id: int) -> None:
        path, body = self.requests.pop(stream_id)
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        if path == "/missing":
            self.conn.send_headers(
                stream_id, [*ok, ("grpc-status", "5"), ("grpc-message", "no%20such")], end_stream=True
            )
        elif path == "/reset":
            self.conn.reset_stream(stream_id, 0x8)
        elif path == "/slow":
            pass
        else:
            message = bytes(body[5:])[::-1] if path == "/echo" else bytes(range(256)) * (12 << 10)
            self.conn.send_headers(stream_id, ok)
            self.pending[stream_id] = memoryview(struct.pack(">BI", 0, len(message)) + message)
            self.send_pending()

    def send_pending(self) -> None:
        for stream_id, data in list(self.pending.items()):
            while data:
                size = min(len(data), self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                if size <= 0:
                    break
                self.conn.send_data(stream_id, bytes(data[:size]))
                data = data[size:]
            if data:
                self.pending[stream_id] = data
            else:
                del self.pending[stream_id]
                self.conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)


def test_our_client_against_an_h2_server():
    async def main():
        server = await asyncio.get_running_loop().create_server(HyperGrpcServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await H2Transport.connect(f"127.0.0.1:{port}")
        try:
            answers = await asyncio.gather(*(client.call("/echo", bytes([i]) * (i + 1)) for i in range(50)))
            assert answers == [bytes([i]) * (i + 1) for i in range(50)]
            assert await client.call("/echo", b"x" * (1 << 20)) == b"x" * (1 << 20)  # through both windows
            assert await client.call("/big", b"") == bytes(range(256)) * (12 << 10)  # 3 MiB back
            with pytest.raises(RequestFailed) as info:
                await client.call("/missing", b"")
            assert (info.value.status, info.value.message) == ("NOT_FOUND", "no such")
            with pytest.raises(RequestFailed) as info:
                await client.call("/reset", b"")
            assert info.value.status == "CANCELLED"
            with pytest.raises(RequestFailed) as info:
                await client.call("/slow", b"", timeout_s=0.2)
            assert info.value.status == "DEADLINE_EXCEEDED"
            assert await client.call("/echo", b"abc") == b"cba"  # the connection goes on
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()

    uvloop.run(main())
