"""ModelStreamInfer for generative models: Triton's decoupled semantics in Triton's LLM convention.

A request names a generative model (server/generative/model.py) and carries ``text_input`` (BYTES, the prompt)
and, optionally, ``max_tokens`` (any integer type), ``stream`` (BOOL), ``ignore_eos`` (BOOL) and ``seed`` (any
integer type) as input tensors. As Triton's vLLM backend reads them, ``max_tokens``, ``ignore_eos`` and ``seed``
may instead come as request parameters, or inside a ``sampling_parameters`` input (a JSON string); an input
tensor wins. The vLLM backend's ``return_finish_reason``, ``return_num_input_tokens`` and
``return_num_output_tokens`` (BOOL) add the outputs ``finish_reason``, ``num_input_tokens`` and
``num_output_tokens`` (UINT32: the tokens in this response) to every response.

Answers, each a ModelStreamInferResponse carrying the request's ``id``, model name and version:

- ``stream`` true: one response per token, its text in ``text_output`` (BYTES, shape [1]), each with the
  ``triton_final_response`` parameter; the last token's is true, as a backend that sends its final flag with
  its last response (vLLM's) gets it from Triton. With the request parameter
  ``triton_enable_empty_final_response`` true, every token's flag is false and an empty response (no
  outputs) flagged true follows: what Triton sends for a backend that sends the final flag on its own, and
  only when the client opted in (src/grpc/stream_infer_handler.cc). A sequence that ends without flagging its
  last token sends that empty response when asked and nothing otherwise, as Triton does.
- ``stream`` false (or absent, for a model whose config declares ``stream``: a model that does not declare it
  streams): one response with the whole text, flagged final.
- A bad request, or a model that fails, answers ``error_message`` (the id, model name and version kept, the
  final flag set) and the stream goes on. The requests of one stream run concurrently.

``responses`` yields (response or None, last): ``last`` tells the stream's loop that this request is done and
its slot may go to the next one (None: done with nothing to send). Leaving the iteration early (the stream was
cancelled) cancels the sequence, which frees its slot in the model's batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import CodecError, decode_raw, decode_typed
from tailmark.server.errors import InvalidInput, ModelFailed, ServerError
from tailmark.server.generative.model import GenerativeModel

FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"
INTEGER_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
# the convention's inputs, accepted whatever the model's config declares: name -> datatypes
CONVENTION_INPUTS: dict[str, frozenset[str]] = {
    "text_input": frozenset({"BYTES"}),
    "max_tokens": INTEGER_TYPES,
    "stream": frozenset({"BOOL"}),
    "ignore_eos": frozenset({"BOOL"}),
    "seed": INTEGER_TYPES,
    "random_seed": INTEGER_TYPES,  # TensorRT-LLM's name for it
    "sampling_parameters": frozenset({"BYTES"}),
    "exclude_input_in_output": frozenset({"BOOL"}),  # the prompt is never echoed here
    "return_finish_reason": frozenset({"BOOL"}),
    "return_num_input_tokens": frozenset({"BOOL"}),
    "return_num_output_tokens": frozenset({"BOOL"}),
}
EXTRA_OUTPUTS = {
    "return_finish_reason": "finish_reason",
    "return_num_input_tokens": "num_input_tokens",
    "return_num_output_tokens": "num_output_tokens",
}
KNOWN_OUTPUTS = ("text_output", *EXTRA_OUTPUTS.values())


@dataclass(frozen=True, slots=True)
class LlmRequest:
    prompt: str
    max_tokens: int | None
    stream: bool
    ignore_eos: bool
    seed: int | None
    empty_final: bool
    outputs: tuple[str, ...]  # the outputs every response carries


def generative_model(core, request):
    """(loaded model, its GenerativeModel) when ``request`` names a generative model, else None (the ordinary
    path answers it, errors included)."""
    if not isinstance(request, pb.ModelInferRequest):
        return None
    try:
        loaded = core.repository.get(request.model_name, request.model_version)
    except ServerError:
        return None
    backend = loaded.backend
    return (loaded, backend) if isinstance(backend, GenerativeModel) else None


def _inputs(request: pb.ModelInferRequest, loaded) -> dict[str, np.ndarray]:
    what = f"model {loaded.name!r}"
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{what}: request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    declared = loaded.input_by_name
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        allowed = CONVENTION_INPUTS.get(tensor.name)
        if allowed is None and tensor.name in declared:
            allowed = frozenset({declared[tensor.name].datatype})
        if allowed is None:
            expected = ", ".join(repr(n) for n in dict.fromkeys([*declared, *CONVENTION_INPUTS]))
            raise InvalidInput(f"{what}: unexpected input {tensor.name!r}; expected {expected}")
        if tensor.datatype not in allowed:
            raise InvalidInput(f"{what}: input {tensor.name!r} has datatype {tensor.datatype}, expected "
                               f"{' or '.join(sorted(allowed))}")  # fmt: skip
        if tensor.name in arrays:
            raise InvalidInput(f"{what}: input {tensor.name!r} appears twice")
        try:
            if raw:
                array = decode_raw(raw[index], tensor.datatype, tuple(tensor.shape))
            elif tensor.HasField("contents"):
                array = decode_typed(tensor.contents, tensor.datatype, tuple(tensor.shape))
            else:
                raise InvalidInput(f"{what}: input {tensor.name!r} has no data (neither raw nor typed contents)")
        except CodecError as exc:
            raise InvalidInput(f"{what}: input {tensor.name!r}: {exc}") from None
        if array.size != 1:
            raise InvalidInput(f"{what}: input {tensor.name!r} must hold one element, got shape {list(array.shape)}")
        arrays[tensor.name] = array.reshape(-1)
    return arrays


def _parameter(request: pb.ModelInferRequest, name: str):
    parameter = request.parameters.get(name)
    if parameter is None:
        return None
    kind = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, kind) if kind else None


def _integer(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInput(f"{name!r} must be an integer, got {value!r}")
    return int(value)


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInput(f"{name!r} must be a boolean, got {value!r}")
    return bool(value)


def parse(request: pb.ModelInferRequest, loaded) -> LlmRequest:
    """The request in the convention's terms; InvalidInput names what is wrong."""
    arrays = _inputs(request, loaded)
    if "text_input" not in arrays:
        raise InvalidInput(f"model {loaded.name!r}: missing input 'text_input' (BYTES, the prompt)")
    try:
        prompt = bytes(arrays["text_input"][0]).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("'text_input' is not UTF-8 text") from None
    sampling: dict = {}
    if "sampling_parameters" in arrays:
        try:
            sampling = json.loads(bytes(arrays["sampling_parameters"][0]))
        except ValueError as exc:
            raise InvalidInput(f"'sampling_parameters' is not JSON: {exc}") from None
        if not isinstance(sampling, dict):
            raise InvalidInput("'sampling_parameters' must be a JSON object")

    def setting(name: str, *tensor_names: str):
        for tensor_name in (name, *tensor_names):
            if tensor_name in arrays:
                return arrays[tensor_name][0].item()
        value = _parameter(request, name)
        return sampling.get(name) if value is None else value

    max_tokens = setting("max_tokens")
    seed = setting("seed", "random_seed")
    ignore_eos = setting("ignore_eos")
    # absent: false, as Triton's LLM backends take it, for a model that declares the input; a model that does
    # not declare it cannot be asked, and a decoupled model streams
    stream = arrays["stream"][0].item() if "stream" in arrays else "stream" not in loaded.input_by_name
    empty_final = _parameter(request, EMPTY_FINAL)
    outputs = _outputs(request, loaded, {name for name in EXTRA_OUTPUTS if name in arrays and arrays[name][0]})
    return LlmRequest(
        prompt=prompt,
        max_tokens=None if max_tokens is None else _integer(max_tokens, "max_tokens"),
        stream=_flag(stream, "stream"),
        ignore_eos=False if ignore_eos is None else _flag(ignore_eos, "ignore_eos"),
        seed=None if seed is None else _integer(seed, "seed"),
        empty_final=False if empty_final is None else _flag(empty_final, EMPTY_FINAL),
        outputs=outputs,
    )


def _outputs(request: pb.ModelInferRequest, loaded, asked: set[str]) -> tuple[str, ...]:
    """Those the request lists, else text_output and the extras its return_* inputs ask for."""
    if request.outputs:
        names = []
        for output in request.outputs:
            if output.name not in KNOWN_OUTPUTS:
                expected = ", ".join(repr(n) for n in KNOWN_OUTPUTS)
                raise InvalidInput(f"model {loaded.name!r}: unknown output {output.name!r}; expected {expected}")
            names.append(output.name)
        return tuple(names)
    return ("text_output", *(EXTRA_OUTPUTS[name] for name in EXTRA_OUTPUTS if name in asked))


def _max_tokens(backend: GenerativeModel, llm: LlmRequest, prompt_tokens: int) -> int:
    room = backend.max_model_len - prompt_tokens
    if llm.max_tokens is None:
        max_tokens = min(backend.default_max_tokens, room)
    elif llm.max_tokens < 1:
        raise InvalidInput(f"'max_tokens' must be at least 1, got {llm.max_tokens}")
    else:
        max_tokens = llm.max_tokens
    if max_tokens < 1 or max_tokens > room:
        raise InvalidInput(
            f"the model's context is {backend.max_model_len} tokens: the prompt's {prompt_tokens} and "
            f"max_tokens {max(max_tokens, 1)} exceed it"
        )
    return max_tokens


def _bytes_element(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data


def _response(request, loaded, final: bool) -> pb.ModelStreamInferResponse:
    response = pb.ModelStreamInferResponse()
    infer = response.infer_response
    infer.model_name, infer.model_version, infer.id = loaded.name, loaded.version, request.id
    infer.parameters[FINAL].bool_param = final
    return response


def _answer(request, loaded, llm: LlmRequest, text: str, *, tokens: int, prompt_tokens: int, finish, final: bool):
    response = _response(request, loaded, final)
    infer = response.infer_response
    for name in llm.outputs:
        if name == "text_output":
            datatype, raw = "BYTES", _bytes_element(text)
        elif name == "finish_reason":
            datatype, raw = "BYTES", _bytes_element(str(finish))  # "None" until the last, as vLLM's backend
        else:
            datatype = "UINT32"
            raw = struct.pack("<I", prompt_tokens if name == "num_input_tokens" else tokens)
        infer.outputs.add(name=name, datatype=datatype, shape=[1])
        infer.raw_output_contents.append(raw)
    return response


def error_response(request, loaded, exc: BaseException) -> pb.ModelStreamInferResponse:
    """A request the model refused or failed: Triton's error response from a backend (flagged final)."""
    response = _response(request, loaded, True)
    response.error_message = str(exc)
    return response


async def responses(request, model) -> AsyncIterator[tuple[pb.ModelStreamInferResponse | None, bool]]:
    """The answers to one request for a generative model, as (response or None, last)."""
    loaded, backend = model
    start = time.perf_counter_ns()
    try:
        llm = parse(request, loaded)
        prompt_tokens = backend.count_prompt(llm.prompt)
        max_tokens = _max_tokens(backend, llm, prompt_tokens)
    except ServerError as exc:
        loaded.stats.record_failure(time.perf_counter_ns() - start)
        yield error_response(request, loaded, exc), True
        return
    sequence = backend.start(loaded.stats, llm.prompt, max_tokens, ignore_eos=llm.ignore_eos, seed=llm.seed)
    answer = dict(prompt_tokens=prompt_tokens)
    try:
        if not llm.stream:
            text = "".join([token.text async for token in sequence])
            yield _answer(request, loaded, llm, text, tokens=sequence.generated, finish=sequence.finish_reason,
                          final=True, **answer), True  # fmt: skip
            return
        flagged = False
        async for text, finish in sequence:
            flagged = finish is not None and not llm.empty_final
            yield _answer(request, loaded, llm, text, tokens=1, finish=finish, final=flagged, **answer), flagged
        if not flagged:
            yield (_response(request, loaded, True) if llm.empty_final else None), True
    except RuntimeError as exc:  # the model failed mid-answer (Sequence raises it)
        yield error_response(request, loaded, ModelFailed(str(exc))), True
    finally:
        backend.cancel(sequence)  # a no-op once it finished; else the stream went away


_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _generation_loop() -> asyncio.AbstractEventLoop:
    """The thread-per-RPC stack has no event loop: its generative models run on this one (made on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="generation-loop", daemon=True).start()
        return _loop


def start_on_generation_loop(request, model, put) -> concurrent.futures.Future:
    """``responses`` for the sync stack, run on the generation loop: each item goes to ``put`` (thread-safe) as
    it comes, the last one always (None if the answers broke off). No RPC thread waits on it; cancelling the
    future cancels the sequence."""

    async def pump() -> None:
        last = False
        try:
            async with contextlib.aclosing(responses(request, model)) as answers:
                async for item in answers:
                    last = item[1]
                    put(item)
        finally:
            if not last:
                put((None, True))

    return asyncio.run_coroutine_threadsafe(pump(), _generation_loop())
