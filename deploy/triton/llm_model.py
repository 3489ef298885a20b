"""Triton python-backend model of tailmark's synthetic LLM, written by the Triton export as ``<model>/1/model.py``.

It runs inside Triton's python stub, so it imports nothing from tailmark: beside it the export copies
``server/generative/tokenizer.py`` as ``synthetic_tokenizer.py`` (hashlib, re and numpy only), so a prompt
gets the same token text here as on tailmark's server, and writes every timing key into config.pbtxt's
``parameters``, so no default lives in two places.

Decoupled (Triton's LLM convention): ``text_input`` (BYTES) in, optional ``max_tokens`` (INT32), ``stream``,
``ignore_eos`` (BOOL) and ``seed`` (INT64); ``text_output`` (BYTES) out, and with ``return_num_input_tokens`` /
``return_num_output_tokens`` (BOOL, as Triton's vLLM backend) ``num_input_tokens`` / ``num_output_tokens``
(UINT32) in every response. Streamed (``stream`` true), each token
is one response, the last carrying TRITONSERVER_RESPONSE_COMPLETE_FINAL; otherwise one response holds the
whole text. An error is one final response carrying it.

The timing is tailmark's engine (server/generative/engine.py) on a thread instead of an event loop: one
scheduler steps every sequence in flight together; a step admits waiting sequences (up to ``max_num_seqs``)
and takes prefill_base_ms + prefill_per_input_token_ms * (their input tokens) when it admits any, plus
decode_base_ms + decode_per_sequence_ms * (sequences decoding) when any decode. The clock runs back to back,
so the time spent sending responses does not add to the gaps; a batch that was idle starts from its first
arrival. ``execute`` only queues: it returns at once, and the scheduler sends through each request's sender.
"""

import json
import math
import os
import sys
import threading
import time
from collections import deque

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic_tokenizer import count_tokens, text_seed, token_texts  # shipped beside this file

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
FLOATS = ("prefill_base_ms", "prefill_per_input_token_ms", "decode_base_ms", "decode_per_sequence_ms",
          "timing_sigma", "stall_ms", "output_mean_tokens", "output_sigma")  # fmt: skip
INTS = ("max_num_seqs", "max_model_len", "default_max_tokens", "stall_after_requests", "seed")
COUNTS = ("num_input_tokens", "num_output_tokens")
CANCEL_CHECK_EVERY = 8  # tokens between asking Triton whether the client cancelled (a round trip each)


def _settings(config):
    parameters = config.get("parameters", {})

    def value(key):
        if key not in parameters:
            raise pb_utils.TritonModelException(f"parameter {key!r} missing: write the model with tailmark export")
        return parameters[key]["string_value"]

    settings = {key: float(value(key)) for key in FLOATS}
    settings.update({key: int(float(value(key))) for key in INTS})
    settings["output_length"] = value("output_length")
    return settings


class Sequence:
    def __init__(self, request, input_tokens, texts, max_tokens, stream, counts):
        self.sender = request.get_response_sender()
        self.counts = counts  # the num_*_tokens outputs asked for
        self.input_tokens = input_tokens
        self.texts = texts
        self.max_tokens = max_tokens
        self.stream = stream
        self.arrival_ns = time.perf_counter_ns()
        self.generated = 0
        self.cancelled = False


class TritonPythonModel:
    def initialize(self, args):
        self.s = _settings(json.loads(args["model_config"]))
        self.waiting = deque()
        self.running = []
        self.condition = threading.Condition()
        self.stopping = False
        self.admitted_count = 0
        self.jitter = np.random.default_rng([self.s["seed"], 2])
        token_texts(text_seed(self.s["seed"], 0, ""), 1)  # numpy's first seeding is slow: not in a request
        self.thread = threading.Thread(target=self._run, name="synthetic-llm-scheduler", daemon=True)
        self.thread.start()

    def execute(self, requests):
        for request in requests:
            try:
                sequence = self._sequence(request)
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                request.get_response_sender().send(pb_utils.InferenceResponse(error=error), flags=FINAL)
                continue
            with self.condition:
                self.waiting.append(sequence)
                self.condition.notify()
        return None

    def finalize(self):
        with self.condition:
            self.stopping = True
            self.condition.notify()
        self.thread.join(5)

    # --- a request ---

    def _sequence(self, request):
        def scalar(name, default):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return default if tensor is None else tensor.as_numpy().reshape(-1)[0]

        prompt = scalar("text_input", b"")
        prompt = prompt.decode("utf-8", errors="replace") if isinstance(prompt, bytes) else str(prompt)
        input_tokens = count_tokens(prompt)
        room = self.s["max_model_len"] - input_tokens
        max_tokens = scalar("max_tokens", None)
        max_tokens = min(self.s["default_max_tokens"], room) if max_tokens is None else int(max_tokens)
        if max_tokens < 1 or max_tokens > room:
            raise ValueError(
                f"max_tokens {max_tokens}: the prompt has {input_tokens} tokens and the model's maximum context "
                f"length is {self.s['max_model_len']} (max_tokens must be 1..{max(room, 0)})"
            )
        seed = scalar("seed", None)
        rng = text_seed(self.s["seed"], None if seed is None else int(seed), prompt)
        length = self._output_length(rng, max_tokens, bool(scalar("ignore_eos", False)))
        counts = tuple(name for name in COUNTS if bool(scalar(f"return_{name}", False)))
        texts = token_texts(rng, length)
        return Sequence(request, input_tokens, texts, max_tokens, bool(scalar("stream", False)), counts)

    def _output_length(self, rng, max_tokens, ignore_eos):
        s = self.s
        kind = "max_tokens" if ignore_eos else s["output_length"]
        if kind == "max_tokens":
            return max_tokens
        if kind == "uniform":
            draw = rng.integers(1, max_tokens + 1)
        elif kind == "exponential":
            draw = math.ceil(rng.exponential(s["output_mean_tokens"]))
        else:  # lognormal with the configured mean
            sigma = s["output_sigma"]
            draw = round(rng.lognormal(math.log(s["output_mean_tokens"]) - sigma**2 / 2, sigma))
        return int(min(max(draw, 1), max_tokens))

    # --- the scheduler ---

    def _run(self):
        clock_ns = 0  # when the previous step was due to end
        while True:
            with self.condition:
                while not self.running and not self.waiting and not self.stopping:
                    self.condition.wait()
                if self.stopping:
                    return
                now = time.perf_counter_ns()
                decoding = list(self.running)
                # the step starts when the last one was due to end, so only what arrived by then joins it: a
                # request that came while this thread was still sending the last step's tokens waits for the
                # next step, as on tailmark's server
                late = now - clock_ns >= self._step_ms([], len(decoding), count=False) * 1e6
                cutoff = now if not decoding or late else clock_ns
                admitted = []
                while (
                    self.waiting and self.waiting[0].arrival_ns <= cutoff and len(self.running) < self.s["max_num_seqs"]
                ):
                    sequence = self.waiting.popleft()
                    self.running.append(sequence)
                    admitted.append(sequence)
            step_ns = round(self._step_ms(admitted, len(decoding)) * 1e6)
            if decoding:  # back to back while the batch goes on and the thread is less than a step late
                start_ns = clock_ns if now - clock_ns < step_ns else now
            else:  # from the first arrival, not from the scheduler's wake-up
                start_ns = max(clock_ns, min(s.arrival_ns for s in admitted), now - step_ns)
            clock_ns = start_ns + step_ns
            remaining_s = (clock_ns - time.perf_counter_ns()) / 1e9
            if remaining_s > 0:
                time.sleep(remaining_s)
            for sequence in decoding + admitted:
                self._emit(sequence)

    def _step_ms(self, admitted, decoding, count=True):
        s = self.s
        step = 0.0
        if admitted:
            step += s["prefill_base_ms"] + s["prefill_per_input_token_ms"] * sum(q.input_tokens for q in admitted)
        if decoding:
            step += s["decode_base_ms"] + s["decode_per_sequence_ms"] * decoding
        if not count:  # the decode-only estimate above: no stall counting, no jitter draw
            return step
        for _ in admitted:
            self.admitted_count += 1
            if self.admitted_count == s["stall_after_requests"]:
                step += s["stall_ms"]
        if s["timing_sigma"]:
            step *= self.jitter.lognormal(-(s["timing_sigma"] ** 2) / 2, s["timing_sigma"])
        return step

    def _emit(self, sequence):
        if sequence.generated % CANCEL_CHECK_EVERY == 0 and sequence.sender.is_cancelled():
            self._leave(sequence)
            sequence.sender.send(flags=FINAL)
            return
        text = sequence.texts[sequence.generated]
        sequence.generated += 1
        last = sequence.generated >= len(sequence.texts)
        if sequence.stream:
            sequence.sender.send(self._response(sequence, text, 1), flags=FINAL if last else 0)
        elif last:
            whole = self._response(sequence, "".join(sequence.texts), len(sequence.texts))
            sequence.sender.send(whole, flags=FINAL)
        if last:
            self._leave(sequence)

    def _leave(self, sequence):
        with self.condition:
            self.running.remove(sequence)

    @staticmethod
    def _response(sequence, text, tokens):
        outputs = [pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))]
        values = {"num_input_tokens": sequence.input_tokens, "num_output_tokens": tokens}
        outputs += [pb_utils.Tensor(name, np.array([values[name]], dtype=np.uint32)) for name in sequence.counts]
        return pb_utils.InferenceResponse(output_tensors=outputs)
