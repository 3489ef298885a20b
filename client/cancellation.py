"""Request cancellation for generative endpoints: the client closes a stream after X ms or after N tokens.

``CancellingTransport`` wraps the openai transport. For each request it draws (from ``seed``, in request order)
whether the request is one of the cancelled share; a chosen request runs as its own task, which is cancelled
``after_ms`` after the send or as soon as ``after_tokens`` tokens of text have arrived, whichever comes first.
Cancelling the task abandons its connection (client/http_transport.py closes it), which is how a real client
walks away from an answer: the server sees the disconnect and should free the sequence.

A request cut this way raises ``RequestCancelled``, a ``RequestFailed`` whose status is ``CANCELLED_BY_CLIENT``;
the dispatcher counts it apart (``Window.cancelled``): not an error, not a success, in no latency histogram.
A chosen request whose answer ends before its cut is an ordinary success.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from tailmark.client.errors import ConfigError
from tailmark.client.generation import Generation, count_tokens
from tailmark.client.transport import RequestFailed

CANCELLED_BY_CLIENT = "CANCELLED_BY_CLIENT"  # not a gRPC status: a server's CANCELLED stays an error


class RequestCancelled(RequestFailed):
    """The client closed the stream on purpose; ``generation`` holds what arrived before."""

    def __init__(self, message: str, generation: Generation | None) -> None:
        super().__init__(CANCELLED_BY_CLIENT, message)
        self.generation = generation


@dataclass(frozen=True, slots=True)
class CancelPolicy:
    """Which requests are cut, and when. ``after_ms``/``after_tokens`` 0: that trigger is off."""

    after_ms: float = 0.0
    after_tokens: int = 0
    share: float = 1.0  # of requests, drawn per request from ``seed``
    seed: int = 0

    def __post_init__(self) -> None:
        if self.after_ms < 0:
            raise ConfigError(f"--cancel-after-ms {self.after_ms:g}: must be > 0")
        if self.after_tokens < 0:
            raise ConfigError(f"--cancel-after-tokens {self.after_tokens}: must be >= 1")
        if not 0 < self.share <= 1:
            raise ConfigError(f"--cancel-share {self.share:g}: must be > 0 and <= 1")
        if not (self.after_ms or self.after_tokens):
            raise ConfigError("--cancel-share needs --cancel-after-ms or --cancel-after-tokens")

    def to_dict(self) -> dict:
        return {"after_ms": self.after_ms, "after_tokens": self.after_tokens, "share": self.share, "seed": self.seed}


class CancellingTransport:
    """The wrapped transport with the policy applied to ``infer``; everything else is the inner transport's."""

    def __init__(self, inner, policy: CancelPolicy) -> None:
        self._inner = inner
        self.policy = policy
        self._draw = random.Random(policy.seed).random

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def infer(self, payload: bytes, timeout_s: float | None = None) -> Generation:
        if self._draw() >= self.policy.share:
            return await self._inner.infer(payload, timeout_s)
        policy, loop = self.policy, asyncio.get_running_loop()
        why: list[str] = []  # set once, when this request is cut
        seen = [0, None]  # tokens so far, the request's Generation

        def cut(reason: str) -> None:
            if not why and not task.done():
                why.append(reason)
                task.cancel()

        def on_text(generation: Generation) -> None:
            seen[1] = generation
            seen[0] += count_tokens(generation.text[-1])
            if policy.after_tokens and seen[0] >= policy.after_tokens:
                cut(f"closed after {seen[0]} tokens")

        task = loop.create_task(self._inner.infer(payload, timeout_s, on_text=on_text))
        timer = (
            loop.call_later(policy.after_ms / 1000, cut, f"closed after {policy.after_ms:g} ms")
            if policy.after_ms
            else None
        )
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not why or (current is not None and current.cancelling()):
                raise  # the run itself is being cancelled
            raise RequestCancelled(why[0], seen[1]) from None
        finally:
            if timer is not None:
                timer.cancel()
