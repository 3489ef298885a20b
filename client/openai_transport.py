"""OpenAI-compatible generative endpoints (``--transport openai``, target ``http://HOST:PORT`` or ``https://``).

``infer(payload)`` POSTs a request body built by the prompt pool (client/prompts.py) to ``/v1/completions``
or ``/v1/chat/completions`` (``api``) and returns a ``Generation`` (client/generation.py) instead of bytes:
the dispatcher hands it to the token recorder (client/token_metrics.py). A streamed answer (``"stream":
true`` in the body) is read as Server-Sent Events while it arrives, each text chunk stamped on arrival; a
non-streamed one is one JSON body whose text all arrives at the end. ``model_info`` asks ``/v1/models``.

The HTTP layer is the REST transport's (client/http_transport.py: h11 under an asyncio protocol, keep-alive
connections opened up front, another opened rather than a request queued in the client, a timed-out request
closing its connection). A streamed body reaches the reader through the connection's data callback, so no
answer is buffered whole. Reads are the event loop's (256 KiB per read under asyncio and uvloop), not a
stream reader's: aiohttp's 64 KiB default read buffer, which collapsed vLLM's client at long contexts, has
no counterpart here.

Failures keep the gRPC status names the rest of the client counts: HTTP statuses as the REST transport maps
them (429 -> RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE ...), a stream cut mid-event DATA_LOSS, a stream ended
without ``[DONE]`` DATA_LOSS, a connection lost between events UNAVAILABLE, an ``error`` object in the stream
INTERNAL, the deadline DEADLINE_EXCEEDED. A connection closed after ``[DONE]`` but before the body's last chunk
loses nothing of the answer: it is a success.
"""

from __future__ import annotations

import json
import time

import h11

from tailmark.client.control import control_error
from tailmark.client.errors import ConfigError, ModelNotFound
from tailmark.client.generation import Generation, StreamReader, count_tokens, from_json_body
from tailmark.client.http_transport import HttpTransport, _error_message, status_name
from tailmark.client.transport import ModelInfo, RequestFailed
from tailmark.protos import inference_pb2 as pb

APIS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
PLATFORM = "openai"
REQUESTS_CACHED = 4096  # distinct bodies whose request head and input count are kept


def prompt_of(document: dict) -> str:
    """The prompt text of a completions or chat body (every message's content, joined)."""
    if "messages" in document:
        return "\n".join(str(m.get("content") or "") for m in document["messages"] if isinstance(m, dict))
    prompt = document.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


class OpenAITransport(HttpTransport):
    """Completions or chat over keep-alive HTTP/1.1. Create with ``await OpenAITransport.connect(...)``."""

    generative = True  # the run records tokens for this transport's answers

    def __init__(self, host: str, port: int, *, api: str = "completions", **kwargs) -> None:
        super().__init__(host, port, json_tensors=True, **kwargs)
        if api not in APIS:
            raise ConfigError(f"--api {api!r}: must be one of {', '.join(APIS)}")
        self.api = api
        self.path = APIS[api]
        self._bodies: dict[bytes, tuple[h11.Request, bool, int]] = {}

    def _prepare(self, payload: bytes) -> tuple[h11.Request, bool, int]:
        """The request head, whether the body asks to stream, and its prompt's tokens (counted), once per body."""
        try:
            document = json.loads(payload)
        except ValueError:
            raise RequestFailed("INVALID_ARGUMENT", "the request body is not JSON") from None
        headers = [
            *self._base_headers,
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if document.get("stream") else "application/json"),
            ("content-length", str(len(payload))),
        ]
        prepared = (
            h11.Request(method="POST", target=self.path, headers=headers),
            bool(document.get("stream")),
            count_tokens(prompt_of(document)),
        )
        if len(self._bodies) >= REQUESTS_CACHED:
            self._bodies.pop(next(iter(self._bodies)))
        self._bodies[payload] = prepared
        return prepared

    async def infer(self, payload: bytes, timeout_s: float | None = None, on_text=None) -> Generation:  # type: ignore[override]
        """``on_text``: called with the Generation after each streamed text chunk (client/cancellation.py)."""
        request, stream, prompt_tokens = self._bodies.get(payload) or self._prepare(payload)
        generation = Generation(request=payload)
        reader = StreamReader(generation, on_text) if stream else None
        try:
            status, headers, body = await self._exchange(
                request, payload, timeout_s or self._timeout, on_data=reader.feed if reader is not None else None
            )
        except RequestFailed as exc:
            if reader is None or exc.status != "UNAVAILABLE" or not reader.heard:
                raise
            if not (reader.done and reader.failure is None):
                raise reader.cut(exc.message) from None  # the answer had begun: not a refused connection
            # [DONE] arrived and then the connection closed before the body's last chunk: the answer is whole
            status, headers = 200, [(b"content-type", b"text/event-stream")]
        if status != 200:
            raise RequestFailed(status_name(status), _error_message(body))
        if reader is None:
            from_json_body(body, generation, time.perf_counter_ns())
        else:
            content_type = next((v for k, v in headers if k == b"content-type"), b"")
            if not content_type.startswith(b"text/event-stream"):
                raise RequestFailed("INTERNAL", f"asked to stream, the answer is {content_type.decode()!r}")
            reader.result()
        if generation.input_tokens is None:
            generation.input_tokens_counted = prompt_tokens
        return generation

    # --- discovery ---

    async def list_models(self) -> list[str]:
        """The ids ``/v1/models`` lists."""
        status, body = await self._get("/v1/models")
        if status != 200:
            raise control_error(self.target, "ListModels", None, status_name(status), _error_message(body))
        try:
            return [str(entry["id"]) for entry in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise control_error(self.target, "ListModels", None, "INTERNAL", f"malformed answer: {exc}") from None

    async def model_info(self, model: str, version: str = "") -> ModelInfo:
        """The model as ``/v1/models`` lists it (a generative model has no tensors to describe)."""
        models = await self.list_models()
        if model not in models:
            listed = ", ".join(models[:20]) or "none"
            raise ModelNotFound(f"{self.target} does not serve model {model!r} (/v1/models lists: {listed})")
        return ModelInfo(name=model, version=version, platform=PLATFORM, inputs=(), outputs=(), max_batch_size=0)

    async def _control(self, name: str, request):
        if name == "ServerReady":
            await self.list_models()
            return pb.ServerReadyResponse(ready=True)
        raise control_error(self.target, name, request, "UNIMPLEMENTED", "an OpenAI endpoint has no KServe-v2 routes")
