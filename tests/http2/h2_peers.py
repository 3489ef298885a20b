"""python-hyper's ``h2`` as an independent peer of tailmark's sans-IO connection, in memory (no sockets)."""

from __future__ import annotations

import h2.config
import h2.connection

from tailmark.http2 import frames
from tailmark.http2.connection import H2Connection
from tailmark.http2.limits import Limits

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/inference.GRPCInferenceService/ModelInfer"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class Clock:
    """A clock the test moves by hand (budgets refill with time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HyperClientPair:
    """An h2 client talking to our server-side connection; ``exchange()`` moves bytes until both are quiet."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.clock = Clock()
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.server = H2Connection(limits=limits, clock=self.clock)
        self.client.initiate_connection()
        self.server.initiate()
        self.server_events: list = []
        self.client_events: list = []
        self.exchange()

    def exchange(self, raw: bytes = b"") -> list:
        """Send ``raw`` (bytes written by hand) and what the client queued; return the server's new events."""
        new: list = []
        pending = raw
        for _ in range(1000):
            data = pending + self.client.data_to_send()
            pending = b""
            if data:
                new += self.server.receive_data(data)
            while self.server.input_pending:
                new += self.server.receive_data(b"")
            answer = self.server.data_to_send()
            if answer and self.client.state_machine.state.name != "CLOSED":
                self.client_events += self.client.receive_data(answer)
            if not data and not answer:
                break
        self.server_events += new
        return new


class HyperServerPair:
    """Our client-side connection talking to an h2 server."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.clock = Clock()
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.client = H2Connection(client=True, limits=limits, clock=self.clock)
        self.server.initiate_connection()
        self.client.initiate()
        self.server_events: list = []
        self.client_events: list = []
        self.exchange()

    def exchange(self) -> list:
        new: list = []
        for _ in range(1000):
            data = self.client.data_to_send()
            if data:
                self.server_events += self.server.receive_data(data)
            answer = self.server.data_to_send()
            if answer:
                new += self.client.receive_data(answer)
            if not data and not answer:
                break
        self.client_events += new
        return new


class RawClient:
    """Frames written by hand (HPACK by the ``hpack`` package) to our server-side connection, for what no
    well-behaved client sends; ``frames()`` parses what the server wrote back."""

    def __init__(self, limits: Limits | None = None, *, handshake: bool = True) -> None:
        import hpack

        self.clock = Clock()
        self.server = H2Connection(limits=limits, clock=self.clock)
        self.server.initiate()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.events: list = []
        self._received = bytearray()
        if handshake:
            self.send(frames.PREFACE + frames.settings({}))

    def send(self, data: bytes) -> list:
        new = self.server.receive_data(data)
        while self.server.input_pending:
            new += self.server.receive_data(b"")
        self.events += new
        self._received += self.server.data_to_send()
        return new

    def block(self, **extra: str) -> bytes:
        return self.encoder.encode(REQUEST + [(name.replace("_", "-"), value) for name, value in extra.items()])

    def headers(self, stream_id: int, *, end_stream: bool = False, **extra: str) -> bytes:
        flags = frames.END_HEADERS | (frames.END_STREAM if end_stream else 0)
        return frames.frame(frames.HEADERS, flags, stream_id, self.block(**extra))

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """Every frame the server wrote since the last call: (type, flags, stream id, payload)."""
        out, data = [], self._received
        offset = 0
        while len(data) - offset >= 9:
            length = int.from_bytes(data[offset : offset + 3], "big")
            kind, flags = data[offset + 3], data[offset + 4]
            stream_id = int.from_bytes(data[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            out.append((kind, flags, stream_id, bytes(data[offset + 9 : offset + 9 + length])))
            offset += 9 + length
        del data[:offset]
        return out

    def goaway_code(self) -> int | None:
        codes = [frames.u32(payload, 4) for kind, _, _, payload in self.frames() if kind == frames.GOAWAY]
        return codes[-1] if codes else None
