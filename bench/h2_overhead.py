"""CPU per call of tailmark's HTTP/2 + gRPC layers alone, in process: no sockets, no model, no other process.

The server's h2 connection (server/h2/connection.py over tailmark/http2) answers batches of unary calls
with an echo route, and the client's connection (client/h2_transport.py) issues batches of calls and takes
canned answers, each through a transport that only counts bytes. What is left is the protocol code itself,
the part a change to the HTTP/2 stack can make slower or faster; on a shared machine the minimum over
--repeats runs is the steadier figure.

    python bench/h2_overhead.py [--calls 64000] [--batch 32] [--repeats 5]

Measured (2-core VM shared with other jobs, load 3-6, 2026-12-06, ``taskset -c 1``, --repeats 3, five pairs
alternating with the code before the client's port, medians of the pairs' minimums): server 20.6 -> 18.6 µs
per call, client 17.5 -> 12.4 µs (client on the asyncio endpoint -> on the sans-IO connection). Instructions
per call under callgrind, which a busy box does not disturb: server 101.4k -> 80.9k, client 87.1k -> 87.2k
(docs/http2.md, "Speed", says how).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import hpack
import uvloop

from tailmark.client.h2_transport import ClientConnection
from tailmark.http2 import frames
from tailmark.http2.hpack_codec import literal
from tailmark.http2.limits import Limits
from tailmark.server.h2.calls import Call, Route
from tailmark.server.h2.connection import H2Protocol

PATH = "/inference.GRPCInferenceService/ModelInfer"
PAYLOAD = b"p" * 100
MESSAGE = len(PAYLOAD).to_bytes(5, "big") + PAYLOAD
OPEN_WINDOWS = frames.settings({frames.INITIAL_WINDOW_SIZE: 2**31 - 1}) + frames.window_update(0, 2**31 - 65_536)


class CountingTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str):
        return None

    def set_write_buffer_limits(self, **limits) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class EchoServer:
    """What H2Protocol needs of H2GrpcServer, with one route that answers the request message itself."""

    max_message_bytes = 2**31 - 1
    max_inflated_bytes = 32 << 20
    max_concurrent_rpcs = 0
    active = 0
    auth_header = None
    h2_limits = Limits()

    def __init__(self) -> None:
        self.routes = {PATH: Route(call=Call)}
        self.connections: set = set()


async def server_side(calls: int, batch: int) -> float:
    connection = H2Protocol(EchoServer())
    connection.connection_made(CountingTransport())
    encoder = hpack.Encoder()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PATH),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    first, block = encoder.encode(headers), encoder.encode(headers)  # the second: all from the dynamic table
    connection.data_received(
        frames.PREFACE
        + OPEN_WINDOWS
        + frames.frame(frames.HEADERS, frames.END_HEADERS, 1, first)
        + frames.frame(frames.DATA, frames.END_STREAM, 1, MESSAGE)
    )
    batches, stream_id = [], 3
    for _ in range(calls // batch):
        batches.append(
            b"".join(
                frames.frame(frames.HEADERS, frames.END_HEADERS, sid, block)
                + frames.frame(frames.DATA, frames.END_STREAM, sid, MESSAGE)
                for sid in range(stream_id, stream_id + 2 * batch, 2)
            )
        )
        stream_id += 2 * batch
    start = time.process_time()
    for data in batches:
        connection.data_received(data)
        await asyncio.sleep(0)  # scheduled flushes and later turns run
    elapsed = time.process_time() - start
    assert not connection.closed
    return elapsed / (len(batches) * batch)


async def client_side(calls: int, batch: int) -> float:
    pseudo = b"\x83\x86" + literal(":authority", "localhost:8001")
    regular = literal("content-type", "application/grpc") + literal("te", "trailers")
    connection = ClientConnection((pseudo, regular))
    connection.connection_made(CountingTransport())
    connection.data_received(OPEN_WINDOWS)
    answer_head = b"\x88" + literal("content-type", "application/grpc")
    trailers = literal("grpc-status", "0")
    elapsed, stream_id = 0.0, 1
    for _ in range(calls // batch):
        answers = b"".join(
            frames.frame(frames.HEADERS, frames.END_HEADERS, sid, answer_head)
            + frames.frame(frames.DATA, 0, sid, MESSAGE)
            + frames.frame(frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, sid, trailers)
            for sid in range(stream_id, stream_id + 2 * batch, 2)
        )
        stream_id += 2 * batch
        start = time.process_time()
        pending = [connection.call(PATH, PAYLOAD, None) for _ in range(batch)]
        connection.data_received(answers)
        for call in pending:
            assert call.future.result() == PAYLOAD
        elapsed += time.process_time() - start
    return elapsed / (calls // batch * batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=64_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    server = [uvloop.run(server_side(args.calls, args.batch)) for _ in range(args.repeats)]
    client = [uvloop.run(client_side(args.calls, args.batch)) for _ in range(args.repeats)]
    for name, runs in (("server", server), ("client", client)):
        shown = " ".join(f"{1e6 * run:.1f}" for run in runs)
        print(f"{name}: {1e6 * min(runs):.1f} µs CPU per call (min of {len(runs)}: {shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
