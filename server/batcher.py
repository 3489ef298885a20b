"""The dynamic batcher: server/batching.py's rules against a real clock, run by the model's instance threads.

Each model instance is one thread that, like a Triton model instance, pulls its next batch from the
model's shared ``BatchQueue`` itself: it waits on a condition (arrivals notify it; the queue delay and
request timeouts bound the wait), cuts a batch, runs it, and hands each request its slice. So a batch is
cut only when an instance is free, and under load requests gather while every instance is busy. Request
timeouts also fire while every instance is busy: the first request with a deadline starts a watcher
thread that sleeps until the next deadline.

Both gRPC stacks use the same batcher; only the hand-back differs:

- grpc.aio: the request awaits an asyncio future; a finished batch completes all of its futures with one
  ``call_soon_threadsafe`` (one wakeup of the event loop per batch, not per request).
- sync stack: the RPC thread blocks on a ``concurrent.futures.Future`` that the instance thread sets.

Measured against the earlier design (an asyncio task per model that cut batches and sent each to an
executor thread): uvloop's timers tick in whole milliseconds, so a sub-millisecond queue delay made that
task spin through the event loop (16 wakeups per request at 500 req/s with a 500 µs delay); a
condition wait here is exact. Deadlines come from ``time.perf_counter_ns()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from tailmark.server.backends.base import Tensors
from tailmark.server.batching import BatchingPolicy, BatchQueue, Pending, shape_key
from tailmark.server.errors import ModelFailed, RequestTimedOut
from tailmark.server.repository import LoadedModel

TIMED_OUT = "request timeout expired"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one request gets back from its batch: its slice of the outputs and the batch's timings."""

    outputs: Tensors
    queue_ns: int  # enqueue -> its batch started
    input_ns: int  # gathering the batch's inputs
    infer_ns: int
    output_ns: int  # splitting the batch's outputs
    batch_size: int  # samples in the whole batch


def run_batch(model: LoadedModel, batch: list[Pending]) -> list[BatchResult]:
    """Gather (one copy per input), execute, scatter (views of the outputs); runs in an instance thread."""
    begin = time.perf_counter_ns()
    if len(batch) == 1:
        inputs = batch[0].inputs
    else:
        inputs = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
    gathered = time.perf_counter_ns()
    try:
        outputs = model.backend.execute(inputs)
    except Exception as exc:
        raise ModelFailed(f"model {model.name!r} failed: {type(exc).__name__}: {exc}") from exc
    executed = time.perf_counter_ns()
    total = sum(p.batch_size for p in batch)
    parts: list[Tensors] = [{} for _ in batch]
    for name, array in outputs.items():
        array = np.asarray(array)
        if array.ndim == 0 or array.shape[0] != total:
            raise ModelFailed(
                f"model {model.name!r} output {name!r} has shape {list(array.shape)}; "
                f"a batch of {total} needs {total} rows"
            )
        offset = 0
        for part, pending in zip(parts, batch):
            part[name] = array[offset : offset + pending.batch_size]
            offset += pending.batch_size
    end = time.perf_counter_ns()
    model.stats.record_execution(
        batch_size=total, input_ns=gathered - begin, infer_ns=executed - gathered, output_ns=end - executed
    )
    return [
        BatchResult(part, begin - p.enqueue_ns, gathered - begin, executed - gathered, end - executed, total)
        for part, p in zip(parts, batch)
    ]


class Batcher:
    """The batcher of one model: a shared queue and one thread per model instance, started on first use."""

    def __init__(self, model: LoadedModel, policy: BatchingPolicy) -> None:
        self.model = model
        self.queue = BatchQueue(policy)
        self._cond = threading.Condition()  # instances wait on it for work
        self._deadlines = threading.Condition(self._cond._lock)  # the watcher waits on it; same lock
        self._threads: list[threading.Thread] = []
        self._watcher: threading.Thread | None = None
        self._closed = False

    # --- the request side ---

    async def submit(self, tensors: Tensors, batch_size: int, *, priority: int = 0, timeout_us: int = 0) -> BatchResult:
        """Queue a request from the event loop and await its slice of a batch."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pending = self._add(tensors, batch_size, (loop, future), priority, timeout_us)
        try:
            return await future
        except asyncio.CancelledError:
            self._cancel(pending)
            raise

    def submit_blocking(
        self, tensors: Tensors, batch_size: int, *, priority: int = 0, timeout_us: int = 0
    ) -> BatchResult:
        """Queue a request from an RPC thread and block until its slice of a batch is ready."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._add(tensors, batch_size, (None, future), priority, timeout_us)
        return future.result()

    def _add(self, tensors: Tensors, batch_size: int, waiter, priority: int, timeout_us: int) -> Pending:
        pending = Pending(tensors, batch_size, shape_key(tensors), time.perf_counter_ns(), waiter)
        with self._cond:
            self.queue.add(pending, priority=priority, timeout_us=timeout_us)  # raises when full
            self.model.stats.pending_changed(+1)
            if not self._threads:
                self._start()
            self._cond.notify()
            if pending.deadline_ns:
                if self._watcher is None:
                    name = f"{self.model.name}-timeouts"
                    self._watcher = threading.Thread(target=self._watch, name=name, daemon=True)
                    self._watcher.start()
                self._deadlines.notify()
        return pending

    def _cancel(self, pending: Pending) -> None:
        with self._cond:
            cancelled = self.queue.cancel(pending)
        if cancelled:
            self.model.stats.pending_changed(-1)

    def _start(self) -> None:
        for index in range(max(1, self.model.instances)):
            name = f"{self.model.name}-{self.model.version}-instance{index}"
            thread = threading.Thread(target=self._instance, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    # --- the instance side ---

    def _instance(self) -> None:
        """One model instance: take the next batch when there is one, run it, hand back the slices."""
        cond, queue, stats = self._cond, self.queue, self.model.stats
        while True:
            with cond:
                while True:
                    if self._closed:
                        return
                    now = time.perf_counter_ns()
                    expired = queue.expire(now)
                    if expired:
                        batch = []
                        break
                    batch, wake_ns = queue.next_batch(now)
                    if batch:
                        break
                    cond.wait(None if wake_ns is None else max(0.0, (wake_ns - time.perf_counter_ns()) / 1e9))
            if expired:
                stats.pending_changed(-len(expired))
                _hand_back(expired, None, RequestTimedOut(TIMED_OUT))
                continue
            stats.pending_changed(-len(batch))
            try:
                results = run_batch(self.model, batch)
            except Exception as exc:
                _hand_back(batch, None, exc)
            else:
                _hand_back(batch, results, None)

    def _watch(self) -> None:
        """Reject (or DELAY) requests whose queue timeout expires, even while every instance is busy."""
        queue, stats = self.queue, self.model.stats
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    expired = queue.expire(time.perf_counter_ns())
                    if expired:
                        break
                    wake_ns = queue.next_timeout_ns()
                    timeout = None if wake_ns is None else max(0.0, (wake_ns - time.perf_counter_ns()) / 1e9)
                    self._deadlines.wait(timeout)
            stats.pending_changed(-len(expired))
            _hand_back(expired, None, RequestTimedOut(TIMED_OUT))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._deadlines.notify_all()


def _hand_back(batch: list[Pending], results: list[BatchResult] | None, exception: BaseException | None) -> None:
    """Complete the batch's waiters: sync futures here, asyncio futures with one call into their loop."""
    by_loop: dict = {}
    for index, pending in enumerate(batch):
        loop, future = pending.waiter
        result = None if results is None else results[index]
        if loop is None:
            _settle(future, result, exception)
        else:
            by_loop.setdefault(loop, []).append((future, result))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_all, items, exception)


def _settle_all(items, exception: BaseException | None) -> None:
    for future, result in items:
        _settle(future, result, exception)


def _settle(future, result, exception: BaseException | None) -> None:
    if future.done():  # the caller went away (an asyncio future cancelled with its RPC)
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
