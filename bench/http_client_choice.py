"""Which HTTP/1.1 client library the ``--transport http`` client is built on: aiohttp, httpx or h11.

Closed loop against a near-free local HTTP/1.1 server (a raw asyncio protocol in a child process, so its CPU is
not the client's): requests/s and client CPU µs per request at 1 and 16 requests in flight, each in-flight
request on its own keep-alive connection, for a small body (1 KiB, a token-sized request) and a large one
(600 KiB, a 224x224x3 float32 image) echoed back. Run by hand::

    python -m tailmark.bench.http_client_choice [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import uvloop


def _serve(port_queue) -> None:
    """A minimal keep-alive HTTP/1.1 echo server: answers each request with its own body."""

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = bytearray()

        def data_received(self, data):
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                start = head.find(b"content-length:")
                length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
                if len(self.buffer) < end + 4 + length:
                    return
                body = bytes(self.buffer[end + 4 : end + 4 + length])
                del self.buffer[: end + 4 + length]
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n"
                    % len(body)
                    + body
                )

    async def main():
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    uvloop.run(main())


async def _aiohttp(url: str, body: bytes, inflight: int, seconds: float) -> tuple[int, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=connector, read_bufsize=2**20, skip_auto_headers=("User-Agent",)) as s:

        async def one():
            async with s.post(url, data=body) as response:
                return await response.read()

        return await _loop(one, inflight, seconds)


async def _httpx(url: str, body: bytes, inflight: int, seconds: float) -> tuple[int, float]:
    import httpx

    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one():
            return (await client.post(url, content=body)).content

        return await _loop(one, inflight, seconds)


class _H11Connection(asyncio.Protocol):
    def __init__(self) -> None:
        import h11

        self.h11 = h11
        self.connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=2**20)
        self.future: asyncio.Future | None = None
        self.chunks: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        h11 = self.h11
        self.connection.receive_data(data)
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA:
                return
            if type(event) is h11.Data:
                self.chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                self.connection.start_next_cycle()
                self.future.set_result(b"".join(self.chunks))
                self.chunks = []
                return

    def request(self, host: bytes, body: bytes) -> asyncio.Future:
        h11 = self.h11
        headers = [(b"host", host), (b"content-length", b"%d" % len(body))]
        self.future = asyncio.get_running_loop().create_future()
        self.transport.write(
            self.connection.send(h11.Request(method=b"POST", target=b"/", headers=headers))
            + self.connection.send(h11.Data(data=body))
            + self.connection.send(h11.EndOfMessage())
        )
        return self.future


async def _h11(url: str, body: bytes, inflight: int, seconds: float) -> tuple[int, float]:
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    loop = asyncio.get_running_loop()
    idle: list[_H11Connection] = []
    for _ in range(inflight):
        _, protocol = await loop.create_connection(_H11Connection, "127.0.0.1", port)
        idle.append(protocol)
    host = b"127.0.0.1:%d" % port

    async def one():
        connection = idle.pop()
        try:
            return await connection.request(host, body)
        finally:
            idle.append(connection)

    return await _loop(one, inflight, seconds)


async def _loop(one, inflight: int, seconds: float) -> tuple[int, float]:
    for _ in range(20):  # warm the connections
        await one()
    done = 0
    stop = time.perf_counter() + seconds

    async def worker():
        nonlocal done
        while time.perf_counter() < stop:
            await one()
            done += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return done / wall, cpu / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(queue,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{queue.get(timeout=30)}/"
    socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1].rstrip("/"))), timeout=5).close()
    print(f"{'library':8} {'body':>8} {'in flight':>9} {'req/s':>8} {'CPU µs/req':>11}")
    for size in (1024, 600 * 1024):
        body = bytes(size)
        for name, client in (("aiohttp", _aiohttp), ("httpx", _httpx), ("h11", _h11)):
            for inflight in (1, 16):
                rate, cpu_us = uvloop.run(client(url, body, inflight, args.seconds))
                print(f"{name:8} {size // 1024:>6}Ki {inflight:>9} {rate:>8.0f} {cpu_us:>11.0f}", flush=True)
    server.kill()


if __name__ == "__main__":
    main()
