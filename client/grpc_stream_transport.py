"""KServe gRPC streaming for generative models (``--transport grpc-stream``, target ``HOST:PORT``).

Each request is one ModelStreamInfer call on grpc.aio (the channel, TLS and metadata of ``GrpcTransport``): the
request, built by the prompt pool in Triton's LLM convention (client/prompts.py ``TritonPromptPool``: a
serialised ModelInferRequest with ``text_input``, ``max_tokens``, ``stream`` ...), is written and the call
half-closed; every response that arrives is stamped with ``perf_counter_ns`` as it is read, before it is
parsed, and its ``text_output`` (BYTES) becomes one chunk of the ``Generation`` (client/generation.py) that
``infer`` returns, so the token recorder measures TTFT, gaps and TPOT exactly as for the openai transport.
The response whose ``triton_final_response`` parameter is true ends the answer (an empty one, as Triton sends
when the request sets ``triton_enable_empty_final_response``, carries no text and is not a token).

Token counts: the sum of the responses' ``num_output_tokens`` and the ``num_input_tokens`` output (Triton's
vLLM backend sends them when the request sets ``return_num_*_tokens``; the pool asks when the model declares
those inputs) when the server gives them, else the text counted with ``count_tokens``; ``token_source`` says
which, as for the openai transport.

Failures keep the gRPC status names: the call's own status (UNAVAILABLE, DEADLINE_EXCEEDED for the request
timeout, ...), an ``error_message`` in the stream INTERNAL (the stream carries no status code for it), a call
that ends without a final response DATA_LOSS. Cancelling ``infer`` (client/cancellation.py) cancels the call,
which is how the server learns the client walked away.
"""

from __future__ import annotations

import struct
import time

from tailmark.client.generation import Generation, count_tokens
from tailmark.client.transport import GrpcTransport, RequestFailed
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.service import RPCS

FINAL = "triton_final_response"
REQUESTS_CACHED = 4096  # distinct payloads whose prompt count and stream flag are kept


def _bytes_elements(raw: bytes) -> list[bytes]:
    """A BYTES tensor's raw contents: each element a 4-byte little-endian length, then its bytes."""
    items, at = [], 0
    while at + 4 <= len(raw):
        (size,) = struct.unpack_from("<I", raw, at)
        items.append(raw[at + 4 : at + 4 + size])
        at += 4 + size
    return items


def _output(response: pb.ModelInferResponse, name: str) -> list:
    """The elements of output ``name`` (raw or typed contents); [] if the response has none."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name != name:
            continue
        if index < len(response.raw_output_contents):
            raw = response.raw_output_contents[index]
            if tensor.datatype == "BYTES":
                return _bytes_elements(raw)
            if tensor.datatype in ("UINT32", "INT32"):
                return list(struct.unpack(f"<{len(raw) // 4}{'I' if tensor.datatype == 'UINT32' else 'i'}", raw))
            if tensor.datatype in ("UINT64", "INT64"):
                return list(struct.unpack(f"<{len(raw) // 8}{'Q' if tensor.datatype == 'UINT64' else 'q'}", raw))
            return []
        contents = tensor.contents
        return list(contents.bytes_contents or contents.uint_contents or contents.int_contents
                    or contents.uint64_contents or contents.int64_contents)  # fmt: skip
    return []


def prompt_and_stream(payload: bytes) -> tuple[str, bool]:
    """The prompt text and the ``stream`` flag of a serialised ModelInferRequest in Triton's LLM convention."""
    request = pb.ModelInferRequest.FromString(payload)
    prompt, stream = "", False
    for index, tensor in enumerate(request.inputs):
        raw = request.raw_input_contents[index] if index < len(request.raw_input_contents) else None
        if tensor.name == "text_input":
            items = _bytes_elements(raw) if raw is not None else list(tensor.contents.bytes_contents)
            prompt = items[0].decode("utf-8", "replace") if items else ""
        elif tensor.name == "stream":
            stream = bool(raw[0]) if raw else bool(tensor.contents.bool_contents and tensor.contents.bool_contents[0])
    return prompt, stream


class GrpcStreamTransport(GrpcTransport):
    """Create with ``await GrpcStreamTransport.connect(...)`` inside the running loop."""

    generative = True  # the run records tokens for this transport's answers

    def __init__(self, channel, target: str, metadata, timeout_s: float) -> None:
        super().__init__(channel, target, metadata, timeout_s)
        self._stream = channel.stream_stream(RPCS["ModelStreamInfer"].path)
        self._requests: dict[bytes, tuple[int, bool]] = {}

    def _prepare(self, payload: bytes) -> tuple[int, bool]:
        try:
            prompt, stream = prompt_and_stream(payload)
        except Exception as exc:  # a pool bug, not the server's doing
            raise RequestFailed("INVALID_ARGUMENT", f"the request is not a ModelInferRequest: {exc}") from None
        prepared = (count_tokens(prompt), stream)
        if len(self._requests) >= REQUESTS_CACHED:
            self._requests.pop(next(iter(self._requests)))
        self._requests[payload] = prepared
        return prepared

    async def infer(self, payload: bytes, timeout_s: float | None = None, on_text=None) -> Generation:  # type: ignore[override]
        """``on_text``: called with the Generation after each text chunk (client/cancellation.py)."""
        prompt_tokens, stream = self._requests.get(payload) or self._prepare(payload)
        generation = Generation(request=payload, streamed=stream)
        call = self._stream(iter((payload,)), timeout=timeout_s or self._timeout, metadata=self._metadata)
        final = False
        reported_out = 0
        try:
            async for message in call:  # read to the call's end: cancelling it after the final response would
                now = time.perf_counter_ns()  # reset every stream (RST_STREAM), which servers may take for an attack
                if final:
                    continue
                answer = pb.ModelStreamInferResponse.FromString(message)
                if answer.error_message:
                    raise RequestFailed("INTERNAL", f"error in the stream: {answer.error_message}")
                response = answer.infer_response
                text = b"".join(_output(response, "text_output")).decode("utf-8", "replace")
                if text:
                    generation.chunk_ns.append(now)
                    generation.text.append(text)
                    if on_text is not None:
                        on_text(generation)
                if counted := _output(response, "num_output_tokens"):
                    reported_out += sum(counted)
                    generation.output_tokens_reported = reported_out
                if counted := _output(response, "num_input_tokens"):
                    generation.input_tokens = int(counted[0])
                if reason := _output(response, "finish_reason"):
                    generation.finish_reason = reason[0].decode("utf-8", "replace")
                parameter = response.parameters.get(FINAL)
                final = parameter is not None and parameter.bool_param
        except self._grpc.aio.AioRpcError as exc:
            raise RequestFailed(exc.code().name, exc.details() or "") from None
        finally:
            if not call.done():
                call.cancel()  # infer was cancelled (client/cancellation.py) or failed: the server learns it now
        if not final and (stream or not generation.text):  # a whole answer that ended cleanly is whole
            raise RequestFailed("DATA_LOSS", "the stream ended before the final response")
        if generation.input_tokens is None:
            generation.input_tokens_counted = prompt_tokens
        generation.streamed = stream or len(generation.chunk_ns) > 1  # a model with no stream input may stream
        return generation
