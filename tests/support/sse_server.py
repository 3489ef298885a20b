"""A small OpenAI-compatible HTTP/1.1 server for the client's tests, with known timings and chosen faults.

It runs on 127.0.0.1 in a thread with its own event loop (``with SseServer(...) as server``). Each answer
has ``tokens`` tokens (" tok0", " tok1", ...): the first after ``ttft_ms``, each later one ``gap_ms`` after
the previous, as SSE chunks (or one JSON body when the request does not stream). ``Behaviour`` picks faults:
the stream cut mid-event or between events, an error object mid-stream, an HTTP status, events split into
many small writes, or several events in one write. Requests are counted and the last body kept.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    tokens: int = 5
    ttft_ms: float = 20.0
    gap_ms: float = 5.0
    usage: bool = True  # honour stream_options.include_usage (and usage in JSON answers)
    cut_mid_event_after: int = -1  # >= 0: after this many tokens, write half an event and close
    close_after: int = -1  # >= 0: after this many tokens, close between events (no [DONE])
    error_after: int = -1  # >= 0: after this many tokens, an error object in the stream
    status: int = 200  # another status: answered with {"error": {...}}
    split_writes: bool = False  # each event in 3-byte writes
    batch_events: bool = False  # all events in one write at the end
    token: str = ""  # non-empty: requests need "authorization: Bearer <token>"
    models: tuple[str, ...] = ("synth-test",)
    skip_done: bool = False  # end the body cleanly without [DONE]
    close_after_done: bool = False  # close the connection after [DONE], before the body's last chunk
    requests: int = 0
    last_body: dict = field(default_factory=dict)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(document: dict | str) -> bytes:
    text = document if isinstance(document, str) else json.dumps(document)
    return f"data: {text}\n\n".encode()


class SseServer:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SseServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 24)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(method, path, headers, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _plain(self, writer, status: int, document: dict) -> None:
        data = json.dumps(document).encode()
        writer.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(data), data)
        )
        await writer.drain()

    async def _answer(self, method: str, path: str, headers: dict, body: bytes, writer) -> bool:
        """Answer one request; False to close the connection."""
        b = self.behaviour
        if b.token and headers.get("authorization") != f"Bearer {b.token}":
            await self._plain(writer, 401, {"error": {"message": "missing or wrong bearer token"}})
            return True
        if method == "GET" and path == "/v1/models":
            await self._plain(writer, 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in b.models]})
            return True
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            await self._plain(writer, 404, {"error": {"message": f"no route {path}"}})
            return True
        b.requests += 1
        request = json.loads(body)
        b.last_body = request
        if b.status != 200:
            await self._plain(writer, b.status, {"error": {"message": f"status {b.status} as configured"}})
            return True
        chat = path.endswith("chat/completions")
        count = min(b.tokens, request.get("max_tokens") or b.tokens)
        prompt_tokens = len(str(request.get("prompt") or request.get("messages")).split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count, "total_tokens": prompt_tokens + count}
        await asyncio.sleep(b.ttft_ms / 1000)
        if not request.get("stream"):
            await asyncio.sleep(b.gap_ms * max(count - 1, 0) / 1000)
            text = "".join(f" tok{i}" for i in range(count))
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
            )
            await self._plain(writer, 200, {"choices": [{**choice, "finish_reason": "length"}], "usage": usage})
            return True
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        held = b""
        for i in range(count):
            if i:
                await asyncio.sleep(b.gap_ms / 1000)
            if i == b.cut_mid_event_after:
                writer.write(_chunk(b'data: {"choices": [{"index": 0, "te'))
                await writer.drain()
                return False
            if i == b.close_after:
                await writer.drain()
                return False
            if i == b.error_after:
                writer.write(_chunk(_event({"error": {"message": "the model fell over"}})))
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            piece = {"index": 0, "delta": {"content": f" tok{i}"}} if chat else {"index": 0, "text": f" tok{i}"}
            if i == count - 1:
                piece["finish_reason"] = "length"
            event = _event({"choices": [piece], "usage": None})
            if b.batch_events:
                held += event
            elif b.split_writes:
                for at in range(0, len(event), 3):
                    writer.write(_chunk(event[at : at + 3]))
                    await writer.drain()
                    await asyncio.sleep(0.0005)
            else:
                writer.write(_chunk(event))
                await writer.drain()
        tail = b": a comment\n\n"
        if b.usage and (request.get("stream_options") or {}).get("include_usage"):
            tail += _event({"choices": [], "usage": usage})
        if not b.skip_done:
            tail += _event("[DONE]")
        writer.write(_chunk(held + tail) + (b"" if b.close_after_done else b"0\r\n\r\n"))
        await writer.drain()
        return not b.close_after_done
