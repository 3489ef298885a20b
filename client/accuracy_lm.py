"""Accuracy mode for a served language model (``tailmark accuracy --lm``): next-byte accuracy on the lm workload's
held-out text, measured over the wire, against the figure the trained weights reached.

    tailmark accuracy --lm --target http://HOST:PORT --model tiny_lm_pystdlib

The held-out windows are the harness's (training/workloads/lm: ``eval_windows`` windows of context + 1 bytes,
spread evenly over the held-out modules of CPython 3.11's standard library, read where Python installed them).
Every position of every window is one request on the OpenAI completions route: the window's bytes up to it as
token ids, ``max_tokens`` 1, greedy; the answer is right when its one byte is the byte that follows. That is the
harness's evaluation, one position at a time, so the two figures differ only where float rounding between the
server's batched KV-cache arithmetic and the harness's full forward pass flips an argmax: the default tolerance,
0.005 (half a point), is far above that and far below what a wrong tokenizer, context or weights would cost.

What is compared comes from the server: the context, the number of windows and the trained figure from the
export's config (``GET /v2/models/NAME/config``: ``context``, ``eval_windows``, ``held_out_next_byte_acc``, written
by ``tailmark train lm --export-to``); for an endpoint without them, ``--windows`` and ``--expected``, and the
context as ``max_model_len`` - 1 from ``/v1/models`` (a tiny_lm serves a whole context of prompt and its next
token). The held-out text is ASCII (checked), so each answer's text is its byte.

VALID when every request succeeded and the served figure is within the tolerance of the trained one; else
INVALID with the cause (exit 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import quote

from tailmark.client.errors import ConfigError

DEFAULT_TOLERANCE = 0.005


def add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("language-model mode (--lm; --transport openai, --target http://HOST:PORT)")
    group.add_argument("--lm", action="store_true", help="next-byte accuracy of a served tiny_lm on held-out text")
    group.add_argument("--windows", type=int, help="held-out windows (default: the export's eval_windows)")
    group.add_argument("--expected", type=float, help="the trained figure (default: the export's)")
    group.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE, help=f"VALID within this (default {DEFAULT_TOLERANCE})"
    )
    group.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")


@dataclass
class LmAccuracy:
    model: str
    context: int
    windows: int
    expected: float
    tolerance: float
    positions: int = 0
    correct: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.positions if self.positions else 0.0

    @property
    def cause(self) -> str | None:
        """Why the result is INVALID; None when VALID."""
        if self.errors:
            return f"failed requests: {self.errors}"
        difference = abs(self.accuracy - self.expected)
        if difference > self.tolerance:
            return (
                f"served {self.accuracy:.4f} differs from the trained {self.expected:.4f} by {difference:.4f}"
                f" > tolerance {self.tolerance}"
            )
        return None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "metric": "next_byte_acc",
            "accuracy": self.accuracy,
            "expected": self.expected,
            "tolerance": self.tolerance,
            "positions": self.positions,
            "correct": self.correct,
            "windows": self.windows,
            "context": self.context,
            "errors": self.errors,
            "verdict": "VALID" if self.cause is None else "INVALID",
            "cause": self.cause,
        }

    def line(self) -> str:
        verdict = "VALID" if self.cause is None else f"INVALID: {self.cause}"
        return (
            f"{self.model}: next-byte accuracy {self.accuracy:.4f} over the wire ({self.correct}/{self.positions}"
            f" positions of {self.windows} held-out windows), trained {self.expected:.4f}, tolerance"
            f" {self.tolerance}: {verdict}"
        )


def held_out_windows(held_out: bytes, context: int, count: int) -> list[bytes]:
    """The harness's evaluation windows (training/workloads/lm ``eval_starts``: evenly spread, non-overlapping),
    computed without torch: float32 linspace rounded, as torch.linspace(...).round() gives them."""
    import numpy as np

    slots = len(held_out) // (context + 1)
    if slots < count:
        raise ConfigError(f"the held-out text has room for {slots} windows of {context + 1} bytes, not {count}")
    starts = np.rint(np.linspace(0, slots - 1, count, dtype=np.float32)).astype(np.int64) * (context + 1)
    return [held_out[s : s + context + 1] for s in starts.tolist()]


def read_held_out() -> bytes:
    from tailmark.training.workload import DataMissing
    from tailmark.training.workloads.lm.corpus import corpus_dir, read_corpus

    try:
        held_out = read_corpus(corpus_dir()).held_out
    except DataMissing as exc:
        raise ConfigError(str(exc)) from None
    if not held_out.isascii():
        raise ConfigError("the held-out text is not ASCII: answers' texts cannot be compared byte for byte")
    return held_out


async def served_settings(transport, model: str) -> tuple[int, dict[str, str]]:
    """The model's context and its config's parameters (empty if the endpoint has no KServe config route)."""
    status, body = await transport._get(f"/v1/models/{quote(model, safe='')}")  # the transport's own GET
    if status != 200:
        raise ConfigError(f"{transport.target} does not serve model {model!r} on /v1/models (HTTP {status})")
    max_model_len = json.loads(body).get("max_model_len")
    status, body = await transport._get(f"/v2/models/{quote(model, safe='')}/config")
    parameters = {}
    if status == 200:
        entries = json.loads(body).get("parameters") or {}
        parameters = {key: str(value.get("string_value", "")) for key, value in entries.items()}
    if parameters.get("context", "").isdigit():
        return int(parameters["context"]), parameters
    if not isinstance(max_model_len, int) or max_model_len < 3:
        raise ConfigError(f"model {model!r}: neither its config nor /v1/models gives its context")
    return max_model_len - 1, parameters


async def measure_lm_accuracy(transport, result: LmAccuracy, windows: list[bytes], concurrency: int) -> LmAccuracy:
    from tailmark.client.transport import RequestFailed

    semaphore = asyncio.Semaphore(concurrency)

    async def one(window: bytes, position: int) -> None:
        body = {"model": result.model, "prompt": list(window[:position]), "max_tokens": 1, "temperature": 0}
        async with semaphore:
            try:
                generation = await transport.infer(json.dumps(body).encode())
            except RequestFailed as exc:
                result.errors[exc.status] = result.errors.get(exc.status, 0) + 1
                return
        result.positions += 1
        result.correct += "".join(generation.text) == chr(window[position])

    await asyncio.gather(*(one(w, p) for w in windows for p in range(1, len(w))))
    result.positions += sum(result.errors.values())
    return result


def lm_accuracy_command(args: argparse.Namespace, common: dict) -> int:
    """``tailmark accuracy --lm``; ``common`` holds the connection settings (TLS, headers, timeouts)."""
    from tailmark.cli import UsageError
    from tailmark.client.openai_transport import OpenAITransport
    from tailmark.client.results import write_atomic

    if args.transport != "openai":
        raise UsageError("--lm measures over the OpenAI completions route: give --transport openai")
    if args.concurrency < 1 or (args.windows is not None and args.windows < 1) or args.tolerance < 0:
        raise UsageError("--concurrency and --windows must be >= 1, --tolerance >= 0")

    async def measure() -> LmAccuracy:
        transport = await OpenAITransport.connect(args.target, api="completions", connections=args.connections,
                                                  **common)  # fmt: skip
        try:
            context, parameters = await served_settings(transport, args.model)
            windows = args.windows or int(parameters.get("eval_windows") or 0)
            expected = args.expected if args.expected is not None else parameters.get("held_out_next_byte_acc")
            if not windows or expected is None:
                raise ConfigError(
                    f"model {args.model!r} records no held-out figure (eval_windows, held_out_next_byte_acc in its"
                    " config): give --windows and --expected"
                )
            # a window is context + 1 bytes; its last position is predicted from context bytes: the whole context
            text = held_out_windows(read_held_out(), context, windows)
            result = LmAccuracy(args.model, context, windows, float(expected), args.tolerance)
            return await measure_lm_accuracy(transport, result, text, args.concurrency)
        finally:
            await transport.aclose()

    from tailmark.client.accuracy import run_measurement

    result = run_measurement(measure)
    if result is None:
        return 1
    print(result.line())
    if args.out:
        write_atomic(args.out, json.dumps(result.to_dict(), indent=2) + "\n")
    return 0 if result.cause is None else 3
