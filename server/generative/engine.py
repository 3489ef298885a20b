"""A continuous-batching simulation: one scheduler task on the server's event loop steps every running
sequence together, as vLLM's engine does, so the time of each token grows with the batch it shares.

A step admits waiting sequences (up to ``max_num_seqs`` in flight), takes the time ``GenerativeSettings``
gives it (admitted sequences' prefill plus one decode of those already running), then hands every sequence
in the step its next token: the admitted ones their first. Arrivals during a step wait for the next one, as
on a real server. The simulated clock runs back to back (a step starts when the last one was due to end, not
when the loop got round to it), so the time spent handing out tokens does not add to the gaps, and a step
that ends late is followed by one that ends on time: the token rate stays the model's. Only a loop more than
a whole step late restarts the clock from now (that time is lost, as on a real server that stalls). A batch
that was idle starts from its first arrival, so the scheduler's own wake-up is not charged to the first token.
Steps that still end more than 1 ms late are counted (``steps_late_total``): the host was too busy for the
model to hold, which a client checking its measurements against the model must know.

asyncio's timers fire up to ~1 ms late (epoll and libuv count milliseconds), too coarse for 5 ms tokens:
each step sleeps on the loop until ~1.5 ms before it ends, then finishes with a blocking ``time.sleep``
(tens of µs late on Linux), holding the loop for that last stretch.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from tailmark.server.generative.model import Sequence
from tailmark.server.generative.scheduler import Scheduler
from tailmark.server.generative.settings import GenerativeSettings
from tailmark.server.stats import ModelStats

BLOCKING_TAIL_S = 0.0015
LATE_NS = 1_000_000


@dataclass(eq=False)
class SyntheticSequence(Sequence):
    texts: list[str] = field(default_factory=list)  # all it will generate, decided at submission


class Engine(Scheduler):
    task_name = "synthetic-llm-scheduler"

    def __init__(self, settings: GenerativeSettings, stats: ModelStats) -> None:
        super().__init__(stats)
        self.settings = settings
        self._admitted = itertools.count(1)
        self._rng = np.random.default_rng([settings.seed, 2])

    def output_length(self, rng: np.random.Generator, max_tokens: int, ignore_eos: bool) -> int:
        """Tokens a request will get: ``max_tokens`` with ignore_eos or the default length model, else a draw
        from the configured distribution, clipped to 1..max_tokens."""
        s = self.settings
        match "max_tokens" if ignore_eos else s.output_length:
            case "max_tokens":
                return max_tokens
            case "uniform":
                draw = rng.integers(1, max_tokens + 1)
            case "exponential":
                draw = math.ceil(rng.exponential(s.output_mean_tokens))
            case _:  # lognormal with the configured mean: mu = ln(mean) - sigma^2 / 2
                draw = round(rng.lognormal(math.log(s.output_mean_tokens) - s.output_sigma**2 / 2, s.output_sigma))
        return int(min(max(draw, 1), max_tokens))

    def submit(self, input_tokens: int, texts: list[str], max_tokens: int) -> SyntheticSequence:
        """Queue a sequence for the next step; call on the server's event loop."""
        return self._enqueue(SyntheticSequence(input_tokens, max_tokens, texts=texts))

    async def _steps(self) -> None:
        clock_ns = 0  # when the previous step was due to end
        while True:
            await self._until_work()
            now = time.perf_counter_ns()
            decoding = list(self.running)
            admitted = self._admit(now)
            step_ns = round(self._step_ms(admitted, len(decoding)) * 1e6)
            if decoding:  # back to back while the batch goes on and the loop is less than a step late
                start_ns = clock_ns if now - clock_ns < step_ns else now
            else:  # from the first arrival (after the step in progress then), not from the scheduler's wake-up
                start_ns = max(clock_ns, min(s.arrival_ns for s in admitted), now - step_ns)
            clock_ns = start_ns + step_ns
            await _sleep_until(clock_ns)
            self.steps_total += 1
            self.steps_late_total += time.perf_counter_ns() - clock_ns > LATE_NS
            for sequence in decoding + admitted:
                if not sequence.cancelled:
                    self._emit(sequence)

    def _admit(self, now_ns: int) -> list[Sequence]:
        admitted = []
        while self.waiting and len(self.running) < self.settings.max_num_seqs:
            sequence = self.waiting.popleft()
            sequence.admitted_ns = now_ns
            self.stats.pending_changed(-1)
            self.running.append(sequence)
            admitted.append(sequence)
            self.prompt_tokens_total += sequence.input_tokens
        return admitted

    def _step_ms(self, admitted: list[Sequence], decoding: int) -> float:
        s = self.settings
        step = s.prefill_ms(len(admitted), sum(seq.input_tokens for seq in admitted)) + s.decode_ms(decoding)
        for _ in admitted:
            if next(self._admitted) == s.stall_after_requests:
                step += s.stall_ms
        if s.timing_sigma:
            step *= self._rng.lognormal(-(s.timing_sigma**2) / 2, s.timing_sigma)
        return step

    def _emit(self, sequence: SyntheticSequence) -> None:
        count = sequence.generated + 1
        self.generation_tokens_total += 1
        if count < len(sequence.texts):
            sequence.emit(sequence.texts[count - 1])
            return
        sequence.emit(sequence.texts[count - 1], "length" if count >= sequence.max_tokens else "stop")
        self.running.remove(sequence)
        end = time.perf_counter_ns()
        infer_ns = end - sequence.admitted_ns
        queue_ns = sequence.admitted_ns - sequence.arrival_ns
        self.stats.record_success(
            batch_size=1, total_ns=end - sequence.arrival_ns, queue_ns=queue_ns, input_ns=0, infer_ns=infer_ns,
            output_ns=0,
        )  # fmt: skip


async def _sleep_until(deadline_ns: int) -> None:
    remaining_s = (deadline_ns - time.perf_counter_ns()) / 1e9
    if remaining_s > BLOCKING_TAIL_S:
        await asyncio.sleep(remaining_s - BLOCKING_TAIL_S)
    else:
        await asyncio.sleep(0)  # let the loop send what the last step produced
    remaining_s = (deadline_ns - time.perf_counter_ns()) / 1e9
    if remaining_s > 0:
        time.sleep(remaining_s)
