"""What every generative model offers the frontends (the OpenAI-compatible routes and KServe's ModelStreamInfer):
a ``Sequence`` per request, iterated for its tokens as the model produces them.

A model counts a prompt in its own tokens (``count_prompt``), then ``start`` queues the request and returns its
sequence; ``cancel`` takes it out (the client went away; a no-op once it has finished). Each item a sequence
yields is a ``Token``: its text, and on the last one the reason generation stopped ("length": max_tokens
reached; "stop": the model ended it), so a frontend can flag the final chunk as it sends it.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

from tailmark.server.stats import ModelStats


class Token(NamedTuple):
    text: str
    finish_reason: str | None = None  # set on the sequence's last token only


@dataclass(eq=False)
class Sequence:
    """One request's generation, as the model's scheduler sees it and its frontend reads it."""

    input_tokens: int
    max_tokens: int
    arrival_ns: int = field(default_factory=time.perf_counter_ns)
    admitted_ns: int = 0
    generated: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    error: BaseException | None = None  # the scheduler failed: iterating raises it
    _tokens: asyncio.Queue = field(default_factory=asyncio.Queue)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled or self.error is not None

    def emit(self, text: str, finish_reason: str | None = None) -> None:
        """The scheduler's next token; with ``finish_reason`` it is the last."""
        self.generated += 1
        self._tokens.put_nowait(Token(text, finish_reason))
        if finish_reason is not None:
            self.finish_reason = finish_reason
            self._tokens.put_nowait(None)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._tokens.put_nowait(None)

    def __aiter__(self):
        return self

    async def __anext__(self) -> Token:
        token = await self._tokens.get()
        if token is None:
            if self.error is not None:
                raise RuntimeError(f"the model failed: {self.error!r}") from self.error
            raise StopAsyncIteration
        return token


class GenerativeModel(ABC):
    """A repository backend that answers with a stream of tokens (a decoupled model, in Triton's words).

    Unary inference is refused, as Triton refuses ModelInfer for a decoupled model."""

    runs_inline = True
    name: str
    max_model_len: int  # prompt + output tokens a request may ask for
    default_max_tokens: int  # when the request gives no max_tokens
    engine = None  # its scheduler (server/generative/scheduler.py), made on the first request

    @abstractmethod
    def count_prompt(self, prompt: str | list[int]) -> int:
        """The prompt's length in this model's tokens (a list is token ids)."""

    @abstractmethod
    def start(
        self, stats: ModelStats, prompt: str | list[int], max_tokens: int, *, ignore_eos: bool = False,
        seed: int | None = None,
    ) -> Sequence:  # fmt: skip
        """Queue one request on the server's event loop; its tokens come by iterating the sequence."""

    def cancel(self, sequence: Sequence) -> None:
        """The client went away: the sequence leaves the batch (a no-op once it has finished)."""
        if self.engine is not None:
            self.engine.cancel(sequence)

    def execute(self, inputs):
        raise RuntimeError(
            f"{self.name} is a generative model: use ModelStreamInfer, or POST /v1/completions or "
            "/v1/chat/completions on --http-port"
        )

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
