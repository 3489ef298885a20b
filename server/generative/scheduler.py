"""What the generative engines share (the synthetic LLM's in engine.py, the tiny LM's in lm_engine.py): the
waiting queue, the running batch, one step task on the server's event loop alive while there is work,
cancellation, ending every sequence with the error when the step loop fails, and the counters
server/metrics.py exports (named after vLLM's). An engine writes ``_steps``, and ``_released`` when a sequence
that leaves the batch gives something back (a KV-cache slot)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from tailmark.server.generative.model import Sequence
from tailmark.server.stats import ModelStats

log = logging.getLogger(__name__)


class Scheduler:
    task_name = "generative-scheduler"

    def __init__(self, stats: ModelStats) -> None:
        self.stats = stats
        self.waiting: deque = deque()
        self.running: list = []
        self.prompt_tokens_total = 0  # of admitted sequences
        self.generation_tokens_total = 0
        self.steps_total = 0
        self.steps_late_total = 0  # ended more than a millisecond after the model's time (the synthetic one's)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def _enqueue(self, sequence: Sequence) -> Sequence:
        """Queue a sequence for the next step; call on the server's event loop."""
        self.waiting.append(sequence)
        self.stats.pending_changed(1)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)
        self._wake.set()
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        """The client went away: the sequence leaves the batch now (its place frees for the next step)."""
        if sequence.done:
            return
        sequence.cancelled = True
        if sequence in self.running:
            self.running.remove(sequence)
            self._released(sequence)
        else:
            self.waiting.remove(sequence)
            self.stats.pending_changed(-1)
        self.stats.record_failure(time.perf_counter_ns() - sequence.arrival_ns)

    def _released(self, sequence: Sequence) -> None:
        """A running sequence left the batch (finished or cancelled)."""

    async def _until_work(self) -> None:
        if not self.running and not self.waiting:
            self._wake.clear()
            await self._wake.wait()

    async def _run(self) -> None:
        try:
            await self._steps()
        except Exception as exc:  # a bug or a failed kernel: end every sequence with it, not leave clients waiting
            log.exception("%s failed", self.task_name)
            for sequence in [*self.running, *self.waiting]:
                sequence.fail(exc)
            for sequence in self.running:
                self._released(sequence)
            self.running.clear()
            self.waiting.clear()

    async def _steps(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
