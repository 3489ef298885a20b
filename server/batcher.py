"""Dynamic batchers: run server/batching.py's rules against a real clock, for each gRPC stack.

- ``AsyncBatcher`` (grpc.aio): one lazily started task per model that cuts batches, one asyncio
  future per request, and one task per batch, which runs the batch in a model-instance thread and then
  splits the results to the waiting requests (or fails them all with the batch's exception).
- ``ThreadBatcher`` (sync stack): the same loop in one thread per model, a Condition instead of the
  event loop, and concurrent futures the RPC threads block on.

A batch is cut only when a model instance is free, so under load requests gather while every instance
is busy (Triton does the same). Deadlines come from ``time.perf_counter_ns()``: uvloop's ``loop.time()``
ticks in whole milliseconds, too coarse for sub-millisecond queue delays.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
    """Gather, execute, scatter; runs in a model-instance thread (or inline for trivial backends)."""
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


def _pending(tensors: Tensors, batch_size: int, enqueue_ns: int, waiter) -> Pending:
    return Pending(tensors, batch_size, shape_key(tensors), enqueue_ns, waiter)


class AsyncBatcher:
    """The batcher of one model on one event loop. Create and use it from that loop only."""

    def __init__(self, model: LoadedModel, policy: BatchingPolicy) -> None:
        self.model = model
        self.queue = BatchQueue(policy)
        self._free = model.instances
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._batches: set[asyncio.Task] = set()

    async def submit(self, tensors: Tensors, batch_size: int, *, priority: int = 0, timeout_us: int = 0) -> BatchResult:
        future = self._loop.create_future()
        pending = _pending(tensors, batch_size, time.perf_counter_ns(), future)
        self.queue.add(pending, priority=priority, timeout_us=timeout_us)  # raises when full
        self.model.stats.pending_changed(+1)
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"batcher-{self.model.name}")
        self._wake()
        try:
            return await future
        except asyncio.CancelledError:
            if self.queue.cancel(pending):
                self.model.stats.pending_changed(-1)
            raise

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        loop = self._loop
        while True:
            now = time.perf_counter_ns()
            for pending in self.queue.expire(now):
                self.model.stats.pending_changed(-1)
                self._finish(pending, exception=RequestTimedOut(TIMED_OUT))
            if self._free > 0:
                batch, wake_ns = self.queue.next_batch(now)
                if batch:
                    self.model.stats.pending_changed(-len(batch))
                    self._free -= 1
                    task = loop.create_task(self._execute(batch))
                    self._batches.add(task)
                    task.add_done_callback(self._batches.discard)
                    continue
            else:
                wake_ns = self.queue.next_timeout_ns()
            self._wakeup = loop.create_future()
            timer = None
            if wake_ns is not None:
                timer = loop.call_later(max(0.0, (wake_ns - time.perf_counter_ns()) / 1e9), self._wake)
            await self._wakeup
            if timer is not None:
                timer.cancel()

    async def _execute(self, batch: list[Pending]) -> None:
        try:
            if self.model.executor is None:
                results = run_batch(self.model, batch)
            else:
                results = await self._loop.run_in_executor(self.model.executor, run_batch, self.model, batch)
        except Exception as exc:
            for pending in batch:
                self._finish(pending, exception=exc)
        else:
            for pending, result in zip(batch, results):
                self._finish(pending, result=result)
        finally:
            self._free += 1
            self._wake()

    def _finish(self, pending: Pending, *, result=None, exception: BaseException | None = None) -> None:
        future: asyncio.Future = pending.waiter
        if future.done():  # the caller went away
            return
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class ThreadBatcher:
    """The batcher of one model for the thread-per-RPC stack: one daemon thread, started on first use."""

    def __init__(self, model: LoadedModel, policy: BatchingPolicy) -> None:
        self.model = model
        self.queue = BatchQueue(policy)
        self._free = model.instances
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, tensors: Tensors, batch_size: int, *, priority: int = 0, timeout_us: int = 0) -> BatchResult:
        future: concurrent.futures.Future = concurrent.futures.Future()
        pending = _pending(tensors, batch_size, time.perf_counter_ns(), future)
        with self._cond:
            self.queue.add(pending, priority=priority, timeout_us=timeout_us)
            self.model.stats.pending_changed(+1)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"batcher-{self.model.name}", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future.result()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.perf_counter_ns()
                for pending in self.queue.expire(now):
                    self.model.stats.pending_changed(-1)
                    self._finish(pending, exception=RequestTimedOut(TIMED_OUT))
                if self._free > 0:
                    batch, wake_ns = self.queue.next_batch(now)
                    if batch:
                        self.model.stats.pending_changed(-len(batch))
                        self._free -= 1
                        self._launch(batch)
                        continue
                else:
                    wake_ns = self.queue.next_timeout_ns()
                timeout = None if wake_ns is None else max(0.0, (wake_ns - time.perf_counter_ns()) / 1e9)
                self._cond.wait(timeout)

    def _launch(self, batch: list[Pending]) -> None:
        if self.model.executor is None:
            self._complete(batch, lambda: run_batch(self.model, batch), notify=False)
        else:
            self.model.executor.submit(self._complete, batch, lambda: run_batch(self.model, batch), notify=True)

    def _complete(self, batch: list[Pending], run, *, notify: bool) -> None:
        try:
            results = run()
        except Exception as exc:
            for pending in batch:
                self._finish(pending, exception=exc)
        else:
            for pending, result in zip(batch, results):
                self._finish(pending, result=result)
        if notify:
            with self._cond:
                self._free += 1
                self._cond.notify()
        else:  # ran inline in the batcher thread, which holds the lock
            self._free += 1

    def _finish(self, pending: Pending, *, result=None, exception: BaseException | None = None) -> None:
        future: concurrent.futures.Future = pending.waiter
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
