"""One generative answer as the client saw it: when each piece of text arrived, and how many tokens were served.

``StreamReader`` takes an OpenAI-compatible SSE body as it arrives (``feed`` from the HTTP layer's data
callback) and stamps, with ``perf_counter_ns``, every chunk that carries text: completions' ``choices[].text``,
chat's ``choices[].delta.content`` (or ``reasoning_content``). Empty and usage-only chunks are not tokens
(they would make the first token look early). ``[DONE]`` ends the answer; an ``error`` object in the stream
fails it.

Token counts: the ``usage`` object (``prompt_tokens``, ``completion_tokens``; streamed in the chunk that
``stream_options: {"include_usage": true}`` adds before ``[DONE]``) when the server gives it, else the text
counted with ``count_tokens``; ``token_source`` says which ("usage" or "counted"). ``count_tokens`` is this
project's documented stand-in for a model tokenizer: a run of up to four word characters, or one other
non-space character, is one token (about the four characters a token of English BPE vocabularies; the same
rule as the reference server's synthetic model). It is not the served model's tokenizer; a run whose server
reports usage never depends on it.

A chunk can carry more than one token; the stamps are per chunk, which is what the client can observe.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from tailmark.client.sse import SseParser, StreamCut
from tailmark.client.transport import RequestFailed

TOKEN_PATTERN = re.compile(r"\w{1,4}|[^\w\s]")
TOKENIZER_NAME = "tailmark-4char: up to four word characters, or one other non-space character, per token"


def count_tokens(text: str) -> int:
    """Tokens in ``text`` by the stand-in tokenizer: "Hello, world!" is Hell|o|,|worl|d|! (6)."""
    return sum(1 for _ in TOKEN_PATTERN.finditer(text))


@dataclass(slots=True, eq=False)
class Generation:
    """What one generative request produced; stamps are ``perf_counter_ns``."""

    chunk_ns: list[int] = field(default_factory=list)  # arrival of each chunk that carried text
    text: list[str] = field(default_factory=list)  # the text pieces, in order
    input_tokens: int | None = None  # from usage; None: not reported
    output_tokens_reported: int | None = None  # from usage; None: not reported
    streamed: bool = True
    finish_reason: str | None = None
    input_tokens_counted: int = 0  # the prompt counted with count_tokens (set by the transport)
    request: bytes = b""  # the request body (the prefix workload's counts look it up)

    @property
    def token_source(self) -> str:
        return "usage" if self.output_tokens_reported is not None else "counted"

    @property
    def output_tokens(self) -> int:
        if self.output_tokens_reported is not None:
            return self.output_tokens_reported
        return count_tokens("".join(self.text))

    @property
    def input_tokens_served(self) -> int:
        if self.input_tokens is not None:
            return self.input_tokens
        return self.input_tokens_counted


def _chunk_text(document: dict) -> str:
    pieces = []
    for choice in document.get("choices") or ():
        text = choice.get("text")
        if text is None:
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content") or delta.get("reasoning_content")
        if text:
            pieces.append(text)
    return "".join(pieces)


def _take_usage(generation: Generation, document: dict) -> None:
    usage = document.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("prompt_tokens"), int):
            generation.input_tokens = usage["prompt_tokens"]
        if isinstance(usage.get("completion_tokens"), int):
            generation.output_tokens_reported = usage["completion_tokens"]


def _finish(generation: Generation, document: dict) -> None:
    for choice in document.get("choices") or ():
        if choice.get("finish_reason"):
            generation.finish_reason = choice["finish_reason"]


def _error_text(document: dict) -> str:
    error = document["error"]
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


class StreamReader:
    """Reads one SSE answer; ``feed`` never raises (it runs inside the connection's callback): a problem is
    kept as ``failure`` and raised by ``result()``."""

    __slots__ = ("_parser", "done", "failure", "generation", "on_text")

    def __init__(self, generation: Generation, on_text=None) -> None:
        self.generation = generation
        self.on_text = on_text  # called with the generation after each text chunk (cancellation.py's trigger)
        self.done = False  # [DONE] arrived
        self.failure: RequestFailed | None = None
        self._parser = SseParser()

    def feed(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        if self.failure is not None:
            return
        generation = self.generation
        for event in self._parser.feed(data):
            if event.data == "[DONE]":
                self.done = True
                continue
            try:
                document = json.loads(event.data)
            except ValueError:
                self.failure = RequestFailed("INTERNAL", f"an event that is not JSON: {event.data[:200]!r}")
                return
            if not isinstance(document, dict):
                continue
            if document.get("error"):
                self.failure = RequestFailed("INTERNAL", f"error in the stream: {_error_text(document)}")
                return
            text = _chunk_text(document)
            if text:
                generation.chunk_ns.append(now)
                generation.text.append(text)
                if self.on_text is not None:
                    self.on_text(generation)
            _take_usage(generation, document)
            _finish(generation, document)

    @property
    def heard(self) -> bool:
        """Some of the answer's body has arrived."""
        return bool(self._parser.events or self._parser.mid_event)

    def cut(self, reason: str) -> RequestFailed:
        """The failure for a connection that ended under this answer: DATA_LOSS if it ended mid-event."""
        if self._parser.mid_event:
            return RequestFailed("DATA_LOSS", f"the event stream was cut mid-event ({reason})")
        return RequestFailed("UNAVAILABLE", f"{reason}, before [DONE]")

    def result(self) -> Generation:
        """The answer once the body has ended; RequestFailed if it is incomplete or carried an error."""
        if self.failure is not None:
            raise self.failure
        try:
            self._parser.close()
        except StreamCut as exc:
            raise RequestFailed("DATA_LOSS", str(exc)) from None
        if not self.done:
            raise RequestFailed("DATA_LOSS", "the event stream ended without data: [DONE]")
        return self.generation


def from_json_body(body: bytes, generation: Generation, done_ns: int) -> Generation:
    """A non-streamed answer: all its text arrived at ``done_ns``."""
    try:
        document = json.loads(body)
    except ValueError:
        raise RequestFailed("INTERNAL", f"an answer that is not JSON: {body[:200]!r}") from None
    if not isinstance(document, dict):
        raise RequestFailed("INTERNAL", "an answer that is not a JSON object")
    if document.get("error"):
        raise RequestFailed("INTERNAL", _error_text(document))
    generation.streamed = False
    text = _chunk_text(document)
    if text:
        generation.chunk_ns.append(done_ns)
        generation.text.append(text)
    _take_usage(generation, document)
    _finish(generation, document)
    return generation
