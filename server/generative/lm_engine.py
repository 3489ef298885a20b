"""Greedy incremental decoding of a TinyLM for many requests at once: a KV cache per sequence and continuous
batching, the model's arithmetic on a worker thread so the event loop keeps streaming.

The step loop is one asyncio task on the server's event loop, alive while there is work:

1. Between steps, on the loop: sequences that finished or were cancelled have left ``running`` (their cache
   slots are free again); waiting sequences are admitted into free slots (FIFO, up to ``max_num_seqs``). With
   continuous batching off there is one slot, so a sequence runs alone to its end while the rest wait.
2. The step, on the worker thread (``await run_in_executor``): one ``TinyLM.cached_block`` call decodes every
   running sequence one token (a batch of rows at per-row positions, each row its sequence's cache slot), and one
   more prefills the sequences admitted for this step (their prompts padded to the longest, each row's first
   token read at its own last prompt position). The step's inputs are copied out before it starts, so a
   cancel during the step only marks the sequence: its token is dropped, and its slot, already free, is
   overwritten by the next prompt that takes it (a position is always written before it is read).
3. Back on the loop: each sequence still running gets its token (``Sequence.emit``), the last one with
   finish_reason "length", and leaves the batch.

While the worker computes, the loop is free: the tokens of the previous step are written to their clients,
new requests are parsed and queued, and they join at the next step, not when the running batch has ended.
A step's time is the slowest of its parts (a long prompt's prefill delays every sequence's next token by that
much), as in an engine without chunked prefill. torch releases the GIL inside its kernels, so the loop and the
worker overlap on a multi-core host.

Counters mirror the synthetic engine's (server/metrics.py exports them): prompt_tokens_total,
generation_tokens_total, steps_total, waiting and running; ``steps_late_total`` stays 0 (there is no schedule
for a real model to be late on). Each step is one execution in the model's statistics, its batch size the
sequences it stepped.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from tailmark.models.tiny_lm import TinyLM
from tailmark.server.generative.model import Sequence
from tailmark.server.generative.scheduler import Scheduler
from tailmark.server.stats import ModelStats


@dataclass(eq=False)
class LmSequence(Sequence):
    prompt: list[int] = field(default_factory=list)
    slot: int = -1  # its row of the KV cache while running
    last: int = 0  # the token to feed next (the one generated last)
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def position(self) -> int:
        """Where ``last`` goes in the cache: after the prompt and the tokens before it."""
        return len(self.prompt) + self.generated - 1


class LmEngine(Scheduler):
    task_name = "tiny-lm-scheduler"

    def __init__(self, model: TinyLM, stats: ModelStats, *, max_num_seqs: int, continuous: bool = True) -> None:
        super().__init__(stats)  # steps_late_total stays 0: a real model has no schedule to be late on
        self.model = model
        self.device = model.out.weight.device
        self.continuous = continuous
        self.cache = model.new_cache(max_num_seqs if continuous else 1)
        self.free = list(range(self.cache.slots))
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="tiny-lm-step")

    def submit(self, prompt: list[int], max_tokens: int) -> LmSequence:
        """Queue a sequence for the next step; call on the server's event loop."""
        return self._enqueue(LmSequence(len(prompt), max_tokens, prompt=prompt))

    def _released(self, sequence: LmSequence) -> None:
        self.free.append(sequence.slot)  # its cache slot, for the next admission

    async def _steps(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._until_work()
            decoding = list(self.running)
            admitted = self._admit(time.perf_counter_ns())
            decode = [(s.slot, s.last, s.position) for s in decoding]
            prefill = [(s.slot, s.prompt) for s in admitted]
            began = time.perf_counter_ns()
            tokens = await loop.run_in_executor(self._worker, self._compute, decode, prefill)
            self.steps_total += 1
            stepped = len(decode) + len(prefill)
            self.stats.record_execution(
                batch_size=stepped, input_ns=0, infer_ns=time.perf_counter_ns() - began, output_ns=0
            )
            for sequence, token in zip(decoding + admitted, tokens, strict=True):
                if not sequence.cancelled:
                    self._emit(sequence, token)

    def _admit(self, now_ns: int) -> list[LmSequence]:
        admitted = []
        while self.waiting and self.free:
            sequence = self.waiting.popleft()
            sequence.admitted_ns = now_ns
            sequence.slot = self.free.pop()
            self.stats.pending_changed(-1)
            self.running.append(sequence)
            admitted.append(sequence)
            self.prompt_tokens_total += sequence.input_tokens
        return admitted

    def _compute(self, decode: list[tuple[int, int, int]], prefill: list[tuple[int, list[int]]]) -> list[int]:
        """The next token of each sequence, decoding ones first: runs on the worker thread."""
        model, device = self.model, self.device
        picked = []
        if decode:
            rows, last, positions = (torch.tensor(column, device=device) for column in zip(*decode, strict=True))
            logits = model.cached_block(last[:, None], rows, positions, self.cache)
            picked.append(logits[:, 0].argmax(dim=-1))
        if prefill:
            lengths = [len(prompt) for _, prompt in prefill]
            padded = torch.zeros(len(prefill), max(lengths), dtype=torch.long)
            for row, (_, prompt) in enumerate(prefill):
                padded[row, : len(prompt)] = torch.tensor(prompt)
            rows = torch.tensor([slot for slot, _ in prefill], device=device)
            starts = torch.zeros(len(prefill), dtype=torch.long, device=device)
            logits = model.cached_block(padded.to(device), rows, starts, self.cache)
            ends = torch.tensor(lengths, device=device) - 1
            picked.append(logits[torch.arange(len(prefill), device=device), ends].argmax(dim=-1))
        return torch.cat(picked).tolist()

    def _emit(self, sequence: LmSequence, token: int) -> None:
        self.generation_tokens_total += 1
        last = sequence.generated + 1 == sequence.max_tokens
        text = sequence.decoder.decode(bytes((token,)), final=last)
        if not last:
            sequence.last = token
            sequence.emit(text)
            return
        sequence.emit(text, "length")
        self.running.remove(sequence)
        self._released(sequence)
        end = time.perf_counter_ns()
        self.stats.record_request(
            total_ns=end - sequence.arrival_ns, queue_ns=sequence.admitted_ns - sequence.arrival_ns, input_ns=0,
            infer_ns=end - sequence.admitted_ns, output_ns=0,
        )  # fmt: skip

    def close(self) -> None:
        super().close()
        self._worker.shutdown(wait=False, cancel_futures=True)
