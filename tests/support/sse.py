"""A test-side OpenAI client, just enough to check the server: POST a JSON body over http.client and read a
Server-Sent Events answer event by event, stamping each with the time its bytes arrived.

Deliberately independent of tailmark's own client (which is what gets checked against the server)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    sent_ns: int
    body: bytes = b""  # a non-streamed answer
    events: list[tuple[int, str]] = field(default_factory=list)  # (arrival ns, the data of each `data:` event)

    def json(self):
        return json.loads(self.body)

    def chunks(self) -> list[dict]:
        """The JSON chunks, without the final [DONE]."""
        assert self.events and self.events[-1][1] == "[DONE]", self.events[-3:]
        return [json.loads(data) for _, data in self.events[:-1]]

    def token_times_ns(self) -> list[int]:
        """Arrival of each event that carries text (role-only and usage-only chunks skipped, as for TTFT)."""
        times = []
        for arrived, data in self.events[:-1]:
            for choice in json.loads(data)["choices"]:
                if choice.get("text") or (choice.get("delta") or {}).get("content"):
                    times.append(arrived)
        return times


def post(port: int, path: str, body, *, headers: dict | None = None, stop_after_events: int = 0) -> Answer:
    """POST ``body`` (a dict, or raw bytes) to 127.0.0.1:``port``; an event stream is read to its end, or
    ``stop_after_events`` events and the connection dropped (a client that goes away)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        sent = time.perf_counter_ns()
        connection.request("POST", path, data, {"content-type": "application/json", **(headers or {})})
        response = connection.getresponse()
        answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, sent)
        if answer.headers.get("content-type") != "text/event-stream":
            answer.body = response.read()
            return answer
        buffer = b""
        while chunk := response.read1(65536):
            arrived = time.perf_counter_ns()
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                assert event.startswith(b"data: "), event
                answer.events.append((arrived, event[len(b"data: ") :].decode()))
                if stop_after_events and len(answer.events) >= stop_after_events:
                    return answer
        assert buffer == b"", f"the stream ended inside an event: {buffer!r}"
        return answer
    finally:
        connection.close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()
