"""Accuracy mode (LoadGen's AccuracyOnly): every sample once, outputs checked against labels.

Samples come from ``--input-data`` (the same files the performance scenarios take); labels from a
``.npy`` of class indices, one per sample. Requests carry up to ``batch_size`` samples when the model
batches; responses are parsed in full here (unlike the performance path) and the top-1 class of the
named output is compared with the label. Outputs are decoded from raw bytes or typed ``contents``
(KServe answers in typed contents; the protocol allows both). Each answer first passes the basic
response check (client/response_check.py); one that fails is counted as ``BAD_RESPONSE``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailmark.client.errors import ConfigError
from tailmark.client.response_check import BAD_RESPONSE, ResponseCheck, output_array
from tailmark.client.samples import SamplePool
from tailmark.client.transport import RequestFailed, Transport
from tailmark.protos import inference_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyResult:
    samples: int
    correct: int
    errors: dict[str, int]

    @property
    def top1(self) -> float:
        return self.correct / self.samples if self.samples else 0.0

    def to_dict(self) -> dict:
        return {"samples": self.samples, "correct": self.correct, "top1": self.top1, "errors": self.errors}


def load_labels(path: Path, count: int) -> np.ndarray:
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read labels: {exc}") from None
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iu":
        raise ConfigError(f"{path}: labels must be integer class indices, got {labels.dtype}")
    if len(labels) != count:
        raise ConfigError(f"{path}: {len(labels)} labels for {count} samples")
    return labels


def output_tensor(response_bytes: bytes, name: str) -> np.ndarray:
    """Output ``name`` of a serialised response, raw or typed; ConfigError if the response has no such output."""
    response = pb.ModelInferResponse.FromString(response_bytes)
    for index, tensor in enumerate(response.outputs):
        if tensor.name == name:
            return output_array(response, index)
    names = [t.name for t in response.outputs]
    raise ConfigError(f"the response has no output {name!r} (it has {names})")


async def measure_accuracy(
    transport: Transport, pool: SamplePool, labels: np.ndarray, *, output: str, batch_size: int, concurrency: int = 8
) -> AccuracyResult:
    batch = min(batch_size, pool.model.max_batch_size) if pool.batching else 1
    starts = list(range(0, pool.count, batch))
    correct = 0
    errors: dict[str, int] = {}
    semaphore = asyncio.Semaphore(concurrency)
    check = ResponseCheck(pool.model)

    async def one(start: int) -> None:
        nonlocal correct
        size = min(batch, pool.count - start)
        async with semaphore:
            payload = pool.payload(start, size)
            try:
                response = await transport.infer(payload)
            except RequestFailed as exc:
                errors[exc.status] = errors.get(exc.status, 0) + size
                return
        if check(payload, response) is not None:
            errors[BAD_RESPONSE] = errors.get(BAD_RESPONSE, 0) + size
            return
        scores = output_tensor(response, output).reshape(size, -1)
        correct += int((scores.argmax(axis=1) == labels[start : start + size]).sum())

    await asyncio.gather(*(one(start) for start in starts))
    if check.bad:
        log.warning("%s", check.note())
    return AccuracyResult(samples=pool.count, correct=correct, errors=errors)


def run_measurement(measure):
    """``tailmark accuracy``'s run of ``measure()`` (a coroutine function) on uvloop: a ConfigError becomes the
    CLI's one-line usage error, another TailmarkError one line on stderr and None (exit 1)."""
    import sys

    import uvloop

    from tailmark.cli import UsageError
    from tailmark.client.errors import TailmarkError

    try:
        return uvloop.run(measure())
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except TailmarkError as exc:
        print(f"tailmark accuracy: {exc}", file=sys.stderr)
        return None
