"""Triton python-backend model of a trained lm export, written by deploy/triton/generative.py as
``<model>/1/model.py`` beside ``tiny_lm.py`` (a copy of tailmark's models/tiny_lm.py) and ``model.pt`` (the
state_dict). It needs torch in Triton's venv and nothing from tailmark.

Decoupled: ``text_input`` (BYTES), optional ``max_tokens`` (INT32; default the config's ``default_max_tokens``,
else 16, as tailmark's tiny_lm backend) and ``stream`` (BOOL) in;
``text_output`` (BYTES) out, and with ``return_num_input_tokens`` / ``return_num_output_tokens`` (BOOL, as
Triton's vLLM backend) ``num_input_tokens`` / ``num_output_tokens`` (UINT32) in every response. Greedy decoding
over byte tokens with the key/value cache, the loop of ``TinyLM.greedy_decode_cached`` run a token at a time, so
the stream equals tailmark's ``complete()``: the prompt's last ``context`` bytes, up to ``max_tokens`` new ones,
fewer when the context fills. Streamed, each byte token is one response, the last carrying
TRITONSERVER_RESPONSE_COMPLETE_FINAL; its text is the byte through an incremental UTF-8 decoder (errors
replaced), as tailmark's tiny_lm backend streams it: a byte that starts a multi-byte character sends "" and
the character comes with its last byte, so the texts join to exactly ``complete()``. Otherwise one response
holds the whole text. One worker thread decodes the requests in their order of arrival (no batching).
"""

import codecs
import json
import os
import queue
import sys
import threading

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_lm import TinyLM  # shipped beside this file

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
ARCHITECTURE = ("d_model", "nhead", "layers", "ff", "context")
DEFAULT_MAX_TOKENS = 16  # tailmark's tiny_lm backend's default
COUNTS = ("num_input_tokens", "num_output_tokens")
CANCEL_CHECK_EVERY = 8  # tokens between asking Triton whether the client cancelled (a round trip each)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config["parameters"]
        sizes = {key: int(parameters[key]["string_value"]) for key in ARCHITECTURE}
        self.default_max_tokens = int(parameters.get("default_max_tokens", {}).get("string_value", DEFAULT_MAX_TOKENS))
        torch.set_num_threads(1)  # one request at a time; tiny matrices gain nothing from more
        self.model = TinyLM(**sizes)
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval()
        self.requests = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="tiny-lm-decoder", daemon=True)
        self.thread.start()

    def execute(self, requests):
        for request in requests:
            self.requests.put(request)
        return None

    def finalize(self):
        self.requests.put(None)
        self.thread.join(5)

    def _run(self):
        while True:
            request = self.requests.get()
            if request is None:
                return
            sender = request.get_response_sender()
            try:
                self._decode(request, sender)
            except Exception as exc:  # one bad request ends with its error; the worker goes on
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)

    def _decode(self, request, sender):
        def scalar(name, default):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return default if tensor is None else tensor.as_numpy().reshape(-1)[0]

        prompt = scalar("text_input", b"")
        prompt = prompt if isinstance(prompt, bytes) else str(prompt).encode("utf-8")
        max_tokens = int(scalar("max_tokens", self.default_max_tokens))
        stream = bool(scalar("stream", False))
        if not prompt or max_tokens < 1:
            raise ValueError("give a non-empty text_input and max_tokens >= 1")
        tokens = list(prompt)[-self.model.context :]
        counts = [name for name in COUNTS if bool(scalar(f"return_{name}", False))]
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out = []
        for token in self._greedy(tokens, max_tokens):
            out.append(token)
            if stream:
                if len(out) % CANCEL_CHECK_EVERY == 0 and sender.is_cancelled():
                    sender.send(flags=FINAL)
                    return
                last = len(out) == max_tokens or len(tokens) + len(out) - 1 >= self.model.context
                piece = text.decode(bytes([token]), final=last)
                sender.send(self._response(piece, counts, len(tokens), 1), flags=FINAL if last else 0)
        if not stream:
            whole = bytes(out).decode("utf-8", errors="replace")
            sender.send(self._response(whole, counts, len(tokens), len(out)), flags=FINAL)

    @torch.no_grad()
    def _greedy(self, prompt, max_new_tokens):
        """``TinyLM.greedy_decode_cached``, yielding each token as soon as it is chosen."""
        model, cache, logits = self.model, [], None
        for position, token in enumerate(prompt):
            logits = model.cached_step(torch.tensor([token]), position, cache)
        produced = 0
        while logits is not None and produced < max_new_tokens:
            token = int(logits[0].argmax())
            produced += 1
            yield token
            position = len(prompt) + produced - 1
            if produced == max_new_tokens or position >= model.context:
                return
            logits = model.cached_step(torch.tensor([token]), position, cache)

    @staticmethod
    def _response(text, counts, input_tokens, output_tokens):
        outputs = [pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))]
        values = {"num_input_tokens": input_tokens, "num_output_tokens": output_tokens}
        outputs += [pb_utils.Tensor(name, np.array([values[name]], dtype=np.uint32)) for name in counts]
        return pb_utils.InferenceResponse(output_tensors=outputs)
