"""Prompts of controlled input length for generative endpoints, from text that ships with Python.

The corpus is the docstrings of a fixed list of standard-library modules (``CORPUS_MODULES``), read from
their source files with ``ast`` (nothing is imported, nothing is downloaded), whitespace collapsed. Prompt
``i`` of a pool is the run of ``input_tokens`` tokens that starts at a position drawn from ``seed`` and ``i``;
it is cut at token boundaries, so ``count_tokens`` (client/generation.py) of the prompt is exactly
``input_tokens``. The same seed gives the same prompts on the same Python version (the corpus's digest is
in ``describe()``, kept with the results). A server with another tokenizer serves other input lengths: the
token recorder keeps what the server's usage reports.

``PromptPool`` has the sample pool's interface (client/samples.py: ``count``, ``payload``, ``model``,
``batching``, ``resized_inputs``), so every scenario's dispatcher drives it unchanged. A payload is the JSON
body of one request: completions (``prompt``) or chat (one user message), ``max_tokens`` = the output
length, ``ignore_eos`` when asked (vLLM's extension: the answer runs to ``max_tokens``), and when streaming
``stream_options: {"include_usage": true}`` so the server reports the tokens it served. An LLM trace's rows
set a request's input tokens (the arrival's payload size) and output tokens (``max_tokens``) instead.
``TritonPromptPool`` builds the same prompts as ModelInferRequests in Triton's LLM convention
(``--transport grpc-stream``). ``body`` gives a request's document and ``encode`` its bytes, so multi-turn
sessions (client/sessions.py) build their growing requests through either pool.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import struct
import sysconfig
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from tailmark.client.errors import ConfigError
from tailmark.client.generation import TOKEN_PATTERN, TOKENIZER_NAME
from tailmark.client.prefix_workload import PrefixSpec, prefixed_prompt
from tailmark.client.transport import ModelInfo
from tailmark.protos.codec import numpy_dtype

CORPUS_MODULES = (
    "argparse", "asyncio/events", "asyncio/tasks", "collections/__init__", "contextlib", "dataclasses", "difflib",
    "email/message", "fractions", "functools", "heapq", "http/client", "inspect", "json/__init__",
    "logging/__init__", "pathlib", "pickle", "random", "shutil", "statistics", "string", "subprocess", "tarfile",
    "textwrap", "threading", "typing", "unittest/case", "urllib/parse", "zipfile",
)  # fmt: skip
CACHE_ENTRIES = 4096  # built request bodies kept (distinct prompt x input length)


_DEFINITIONS = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _docstrings(node) -> list[str]:
    """The docstrings of a module and of the classes and functions defined in its bodies (not ast.walk, which
    visits every expression and took seconds)."""
    doc = ast.get_docstring(node)
    out = [doc] if doc else []
    for child in node.body:
        if isinstance(child, _DEFINITIONS):
            out += _docstrings(child)
    return out


@lru_cache(maxsize=1)
def corpus() -> tuple[str, np.ndarray, np.ndarray]:
    """The corpus text, and the start and end offset of each of its tokens."""
    root = Path(sysconfig.get_paths()["stdlib"])
    pieces = []
    for name in CORPUS_MODULES:
        for path in (root / f"{name}.py", root / name / "__init__.py"):
            if path.is_file():
                break
        else:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        pieces += _docstrings(tree)
    text = re.sub(r"\s+", " ", " ".join(pieces)).strip()
    if not text:
        raise ConfigError(f"no docstrings found under {root}: the prompt corpus needs Python's standard library")
    spans = np.array([m.span() for m in TOKEN_PATTERN.finditer(text)], dtype=np.int64)
    return text, spans[:, 0], spans[:, 1]


def describe_corpus() -> dict:
    text, starts, _ = corpus()
    return {
        "source": "docstrings of Python standard-library modules: " + ", ".join(CORPUS_MODULES),
        "tokenizer": TOKENIZER_NAME,
        "tokens": len(starts),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def prompt_text(index: int, input_tokens: int, seed: int) -> str:
    """``input_tokens`` tokens of the corpus from a position drawn from (seed, index); wraps around the end."""
    text, starts, ends = corpus()
    n = len(starts)
    first = int(np.random.default_rng([seed & (2**63 - 1), index]).integers(0, n))
    pieces, left, at = [], input_tokens, first
    while left > 0:
        take = min(left, n - at)
        pieces.append(text[starts[at] : ends[at + take - 1]])
        left -= take
        at = 0
    return " ".join(pieces)


class PromptPool:
    """Request bodies for one generative model; the sample pool's interface for the dispatcher."""

    def __init__(
        self,
        model: ModelInfo,
        *,
        api: str,
        count: int,
        input_tokens: int,
        output_tokens: int,
        seed: int,
        stream: bool = True,
        ignore_eos: bool = False,
        prefix: PrefixSpec | None = None,  # a shared-prefix workload (client/prefix_workload.py)
    ) -> None:
        if api not in ("completions", "chat"):
            raise ConfigError(f"--api {api!r}: must be completions or chat")
        for name, value in (
            ("--pool-size", count),
            ("--input-tokens", input_tokens),
            ("--output-tokens", output_tokens),
        ):
            if value < 1:
                raise ConfigError(f"{name} {value}: must be >= 1")
        self.model = model
        self.api = api
        self.count = count
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.seed = seed
        self.stream = stream
        self.ignore_eos = ignore_eos
        self.builds = 0
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self.prefix = prefix
        if prefix is not None:
            prefix.check(input_tokens)
        self._prefix_of_prompt = prefix.assign(count, seed) if prefix is not None else []
        self._prefix_of_body: dict[bytes, int] = {}  # built body -> its shared prefix (-1: none)

    batching = False
    generative = True  # the dispatcher passes an LLM trace's output lengths (Arrival.output_tokens)

    def resized_inputs(self, choice: str) -> tuple[str, ...]:
        """A trace's payload size always sets the prompt's length here (it is the input token count)."""
        return ("prompt",)

    def body(self, prompt: str, output_tokens: int = 0) -> dict:
        """One request's JSON document; ``output_tokens`` (0: the pool's) is its max_tokens."""
        document: dict = {"model": self.model.name, "max_tokens": output_tokens or self.output_tokens}
        document["stream"] = self.stream
        if self.api == "chat":
            document["messages"] = [{"role": "user", "content": prompt}]
        else:
            document["prompt"] = prompt
        if self.stream:
            document["stream_options"] = {"include_usage": True}
        if self.ignore_eos:
            document["ignore_eos"] = True
        return document

    def encode(self, document: dict) -> bytes:
        """A request document (``body``) as the bytes the transport sends."""
        return json.dumps(document, separators=(",", ":")).encode()

    def payload(
        self,
        sample: int,
        batch_size: int = 1,
        payload_size: int = 0,
        resized: tuple[str, ...] | None = None,
        output_tokens: int = 0,
    ) -> bytes:
        """The JSON body for prompt ``sample`` (of ``payload_size`` input tokens and ``output_tokens`` max_tokens
        when given: a trace's lengths)."""
        if batch_size != 1:
            raise ConfigError(f"batch size {batch_size}: a generative request carries one prompt")
        key = (sample % self.count, payload_size or self.input_tokens, output_tokens or self.output_tokens)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = self.encode(self.body(self.prompt(key[0], key[1]), key[2]))
        self.builds += 1
        self._cache[key] = data
        if self.prefix is not None:
            self._prefix_of_body[data] = self._prefix_of_prompt[key[0]] if key[1] > self.prefix.tokens else -1
        if len(self._cache) > CACHE_ENTRIES:
            self._prefix_of_body.pop(self._cache.popitem(last=False)[1], None)
        return data

    def prompt(self, index: int, input_tokens: int = 0) -> str:
        """Prompt text number ``index`` (a shared prefix first when the prefix workload gives it one)."""
        input_tokens = input_tokens or self.input_tokens
        if self.prefix is None:
            return prompt_text(index, input_tokens, self.seed)
        prefix = self._prefix_of_prompt[index % self.count]
        return prefixed_prompt(prompt_text, self.prefix, prefix, index, input_tokens, self.seed)

    def prefix_of(self, body: bytes) -> int | None:
        """The shared prefix a body built here starts with (-1: none); None: not a body of this pool's workload."""
        return self._prefix_of_body.get(body) if self.prefix is not None else None

    def describe(self) -> dict:
        """The workload, for the results' environment."""
        return {
            "api": self.api,
            "prompts": self.count,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "stream": self.stream,
            "ignore_eos": self.ignore_eos,
            "seed": self.seed,
            "corpus": describe_corpus(),
            "shared_prefix": self.prefix.to_dict(self.count, self.seed) if self.prefix is not None else None,
        }


class TritonPromptPool(PromptPool):
    """The same prompts as requests in Triton's LLM convention, for KServe's ModelStreamInfer (``--transport
    grpc-stream``): a serialised ModelInferRequest with ``text_input`` (BYTES), ``max_tokens``, ``stream`` and
    ``ignore_eos``, each sent as an input tensor when the model declares it (Triton refuses undeclared inputs),
    else, as Triton's vLLM backend reads them, inside its ``sampling_parameters`` input when it declares that,
    else as request parameters. When the model declares the vLLM backend's ``return_num_input_tokens`` and
    ``return_num_output_tokens`` they are set, so the server reports the tokens it served, and
    ``exclude_input_in_output`` (vLLM's and TensorRT-LLM's whole answers otherwise start with the prompt);
    every request sets ``triton_enable_empty_final_response``, so a final flag arrives whatever the backend.
    ``body``/``encode`` keep the document apart from its bytes, so multi-turn sessions grow the prompt as
    with the completions API."""

    def __init__(self, model: ModelInfo, **kwargs) -> None:
        super().__init__(model, api="completions", **kwargs)
        self.api = "triton"
        self._declared = {tensor.name: tensor.datatype for tensor in model.inputs}
        if model.inputs and "text_input" not in self._declared:
            names = ", ".join(self._declared) or "none"
            raise ConfigError(f"model {model.name!r} has no text_input input (it lists {names}): the grpc-stream "
                              "transport sends Triton's LLM convention (text_input, max_tokens, stream)")  # fmt: skip

    def body(self, prompt: str, output_tokens: int = 0) -> dict:
        document = {"text_input": prompt, "max_tokens": output_tokens or self.output_tokens, "stream": self.stream}
        if self.ignore_eos:
            document["ignore_eos"] = True
        return document

    def _declares(self, name: str) -> bool:
        # a model that lists no inputs: the convention's minimum (text_input, max_tokens, stream) as tensors
        return name in self._declared if self._declared else name in ("text_input", "max_tokens", "stream")

    def encode(self, document: dict) -> bytes:
        from tailmark.protos import inference_pb2 as pb

        request = pb.ModelInferRequest(model_name=self.model.name, model_version=self.model.version)
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        settings = {"max_tokens": document["max_tokens"]}
        if document.get("ignore_eos"):
            settings["ignore_eos"] = True

        def tensor(name: str, datatype: str, raw: bytes) -> None:
            request.inputs.add(name=name, datatype=datatype, shape=[1])
            request.raw_input_contents.append(raw)

        text = document["text_input"].encode("utf-8")
        tensor("text_input", "BYTES", struct.pack("<I", len(text)) + text)
        if self._declares("stream"):
            tensor("stream", "BOOL", bytes([document["stream"]]))
        for name, value in list(settings.items()):
            if not self._declares(name):
                continue
            datatype = self._declared.get(name, "INT32" if name == "max_tokens" else "BOOL")
            if datatype == "BOOL":
                tensor(name, datatype, bytes([bool(value)]))
            else:
                tensor(name, datatype, np.array([value], dtype=numpy_dtype(datatype)).tobytes())
            del settings[name]
        if settings and self._declares("sampling_parameters"):
            text = json.dumps(settings).encode()
            tensor("sampling_parameters", "BYTES", struct.pack("<I", len(text)) + text)
        elif settings:
            for name, value in settings.items():
                parameter = request.parameters[name]
                if isinstance(value, bool):
                    parameter.bool_param = value
                else:
                    parameter.int64_param = value
        for name in ("exclude_input_in_output", "return_num_input_tokens", "return_num_output_tokens"):
            if self._declares(name):
                tensor(name, "BOOL", b"\x01")
        return request.SerializeToString()

    def describe(self) -> dict:
        return {**super().describe(), "api": "triton (text_input, max_tokens, stream over ModelStreamInfer)"}
