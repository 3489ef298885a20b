"""A raw HTTP/2 attacker and the yardsticks of an attack: the server's memory and a good client beside it.

``Attacker`` writes frames by hand on one TCP connection (HPACK by the ``hpack`` package), reads only when
told to, and keeps track of the windows the server grants. ``RssWatch`` samples the server's VmRSS from
/proc while an attack runs. ``GoodTraffic`` sends ordinary gRPC calls on connections of its own the whole
time and counts the ones that failed or took too long. The frame constants and ``frame`` / ``grpc_message``
are shared with the other raw HTTP/2 tests (test_h2_frontend.py).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from pathlib import Path

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x3, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB
INFER = "/inference.GRPCInferenceService/ModelInfer"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload


def grpc_message(message: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(message)) + message


def rst(stream_id: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


class Attacker:
    def __init__(self, target: str, *, settings: dict[int, int] | None = None) -> None:
        host, port = target.rsplit(":", 1)
        self.authority = target
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # a small reader: we mostly don't
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = bytearray()
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.closed = False  # the server hung up (seen by reading)
        self.send_failed = False
        self.connection_window = 65_535  # what the server lets us send
        self.stream_windows: dict[int, int] = {}
        self.initial_window = 65_535
        self.server_settings: dict[int, int] = {}
        payload = b"".join(struct.pack(">HI", key, value) for key, value in (settings or {}).items())
        self.send(PREFACE + frame(SETTINGS, 0, 0, payload))

    def __enter__(self) -> Attacker:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes, deadline: float | None = None) -> bool:
        """Send all of ``data`` unless the server stops reading until ``deadline`` (False) or hangs up."""
        view = memoryview(data)
        while view:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return False
            if self.send_failed:
                return False
            if not select.select([], [self.sock], [], timeout if timeout is not None else 5)[1]:
                if deadline is None:
                    return False
                continue
            try:
                sent = self.sock.send(view[: 1 << 20])
            except (BrokenPipeError, ConnectionResetError):
                self.send_failed = True  # what the server sent before it hung up can still be read
                return False
            view = view[sent:]
        return True

    def block(self, path: str = INFER, **extra: str) -> bytes:
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

    def request(self, stream_id: int, body: bytes, **extra: str) -> bytes:
        """HEADERS + DATA(END_STREAM) of one unary call, as bytes to send."""
        return frame(HEADERS, END_HEADERS, stream_id, self.block(**extra)) + frame(DATA, END_STREAM, stream_id, body)

    def read(self, seconds: float) -> None:
        """Read and parse whatever the server sends for ``seconds`` (or until it hangs up)."""
        deadline = time.monotonic() + seconds
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except (ConnectionResetError, TimeoutError):
                data = b""
            if not data:
                self.closed = True
                break
            self.buffer += data
            self._parse()

    def _parse(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            kind, flags, stream_id = struct.unpack_from(">BBI", buffer, 3)
            payload = bytes(buffer[9 : 9 + length])
            del buffer[: 9 + length]
            stream_id &= 0x7FFFFFFF
            if kind != DATA and kind != PING:  # DATA and PING acks are counted, not kept: floods send many
                self.frames.append((kind, flags, stream_id, payload))
            if kind == WINDOW_UPDATE:
                increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                if stream_id == 0:
                    self.connection_window += increment
                else:
                    self.stream_windows[stream_id] = self.stream_windows.get(stream_id, self.initial_window) + increment
            elif kind == SETTINGS and not flags & ACK:
                for offset in range(0, len(payload), 6):
                    key, value = struct.unpack_from(">HI", payload, offset)
                    self.server_settings[key] = value
                    if key == 0x4:
                        self.initial_window = value

    def goaway_code(self) -> int | None:
        codes = [struct.unpack(">I", p[4:8])[0] for kind, _, _, p in self.frames if kind == GOAWAY]
        return codes[-1] if codes else None

    def resets(self, code: int | None = None) -> list[int]:
        """Streams the server reset (with ``code``, when given)."""
        return [
            sid
            for kind, _, sid, payload in self.frames
            if kind == RST_STREAM and (code is None or struct.unpack(">I", payload)[0] == code)
        ]

    def answered(self) -> set[int]:
        """Streams the server sent a header block on."""
        return {sid for kind, _, sid, _ in self.frames if kind == HEADERS}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssWatch:
    """The server's peak RSS growth over a block: ``with RssWatch(pid) as watch: ...; watch.growth``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_bytes(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.start


class GoodTraffic:
    """Ordinary unary calls on a connection of their own, one after another, while an attack runs."""

    def __init__(self, target: str, timeout_s: float = 2.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import grpc
        import numpy as np

        from tailmark.protos import inference_pb2 as pb

        request = pb.ModelInferRequest(model_name="identity")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
        request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
        with grpc.insecure_channel(self.target) as channel:
            call = channel.unary_unary(
                INFER,
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            call(request, timeout=10)  # connected before the attack starts
            while True:
                stopping = self._stop.is_set()  # one more call once the attack is over
                try:
                    response = call(request, timeout=self.timeout_s)
                    assert response.raw_output_contents[0] == request.raw_input_contents[0]
                    self.ok += 1
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                if stopping:
                    return
                time.sleep(0.02)

    def __enter__(self) -> GoodTraffic:
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        assert self.ok >= 2 and not self.failures, f"good calls: {self.ok} answered, failed: {self.failures[:3]}"
