"""Every answer is checked: an OK ModelInferResponse counts as a success only if it carries the outputs
the model's metadata promises. One that does not is an error of its own, ``BAD_RESPONSE``.

``--validate`` picks how much is checked:

basic (the default), every response:
    every output the metadata lists is present once and no other (the client asks for all of them);
    each has the listed datatype and a shape of the listed rank whose fixed dims match (the batch dim
    of a batching model must equal the request's batch size); its data fits that shape exactly (raw:
    element count x element size bytes; BYTES: at least a 4-byte length prefix per element; typed
    ``contents``, as KServe answers: one value per element). Raw contents come one per output or not
    at all. An output with a variable dim may hold zero elements (a detector that found nothing), but
    an answer with no outputs is refused. When the metadata lists no outputs (KServe), each output must
    still be self-consistent.
full:
    the basic check, and then every output is decoded and compared with the **first answer to the
    same request** (byte-identical requests: the same sample(s), batch and payload). Integer, BOOL
    and BYTES outputs must be equal; floats within a relative tolerance of the reference's largest
    magnitude (1e-3 for FP32/FP64, 1e-2 for FP16/BF16: batching and kernel choice legitimately move
    the last bits). References are kept for the first 64 distinct requests (at most 64 MiB); other
    requests get the basic check. This catches an endpoint that answers the same input differently
    (a race between batched requests, a stale or wrong model); whether the first answer is right is
    what ``tailmark accuracy`` measures. A model that is nondeterministic by design fails it.
none:
    no check (an OK status is a success).

Cost: a response is checked from its wire bytes without copying its tensors. Its header (the fields
before the trailing ``raw_output_contents``) is parsed once per layout (10-16 µs); the next answer of
the same length whose header bytes and raw-field lengths are the same, to a request of the same length
and header, is accepted by comparing bytes: ~1 µs per answer, whatever its size, against 4-60 µs for a
protobuf parse plus field reads (measured on a shared 2-core VM, 4 KB to 600 KB answers). ``full`` adds
a decode and a comparison: ~30 µs for small outputs, ~40 µs for ResNet's [1, 1000], ~1.3 ms for a
600 KB output; at high rates it can make the client the bottleneck.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from tailmark.client.transport import ModelInfo, RequestFailed, TensorInfo, Transport
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import TYPED_FIELD_BY_DATATYPE, CodecError, decode_raw, decode_typed, numpy_dtype

BAD_RESPONSE = "BAD_RESPONSE"  # the status name a failed check is counted under
MODES = ("basic", "full", "none")
LAYOUTS_KEPT = 256  # validated (request, response) layouts remembered
REFERENCES = 64  # --validate full: distinct requests whose first answer is kept
REFERENCE_BYTES = 64 << 20
RTOL = {"FP16": 1e-2, "BF16": 1e-2, "FP32": 1e-3, "FP64": 1e-3}

_REQUEST_RAW = (7 << 3) | 2  # ModelInferRequest.raw_input_contents, length-delimited
_RESPONSE_RAW = (6 << 3) | 2  # ModelInferResponse.raw_output_contents


# --- the wire, read without copying tensors ---


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def split_raw(data: bytes, raw_tag: int) -> tuple[int, list[int]] | None:
    """(where the header ends, lengths of the raw fields) of a message whose raw-bytes fields (``raw_tag``)
    all come after its other fields, as every serialiser writes them; None for any other layout."""
    pos, end = 0, len(data)
    header_end = -1
    lengths: list[int] = []
    try:
        while pos < end:
            start = pos
            tag, pos = _varint(data, pos)
            match tag & 7:
                case 2:
                    length, pos = _varint(data, pos)
                    pos += length
                case 0:
                    _, pos = _varint(data, pos)
                case 1:
                    pos += 8
                case 5:
                    pos += 4
                case _:
                    return None
            if tag == raw_tag:
                if header_end < 0:
                    header_end = start
                lengths.append(length)
            elif header_end >= 0:
                return None  # a field after the raw contents
    except IndexError:
        return None
    if pos != end:
        return None
    return (end if header_end < 0 else header_end), lengths


# --- decoding (accuracy mode and --validate full) ---


def output_array(response: pb.ModelInferResponse, index: int) -> np.ndarray:
    """Output ``index`` of a parsed response as an array, from raw bytes or typed ``contents`` (both are
    legal answers: Triton and tailmark send raw, KServe's Python servers typed); CodecError if neither fits."""
    tensor = response.outputs[index]
    shape = tuple(tensor.shape)
    if response.raw_output_contents:
        if index >= len(response.raw_output_contents):
            raise CodecError(
                f"{len(response.outputs)} outputs but {len(response.raw_output_contents)} raw_output_contents"
            )
        return decode_raw(response.raw_output_contents[index], tensor.datatype, shape)
    if tensor.HasField("contents"):
        return decode_typed(tensor.contents, tensor.datatype, shape)
    if math.prod(shape) == 0:
        return np.empty(shape, dtype=numpy_dtype(tensor.datatype))
    raise CodecError(f"output {tensor.name!r} has no data (neither raw nor typed contents)")


def output_arrays(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {tensor.name: output_array(response, index) for index, tensor in enumerate(response.outputs)}


# --- the basic check ---


class ResponseCheck:
    """``check(payload, response)``: None when ``response`` is a valid answer to the request ``payload``,
    else one line saying what is wrong. Counts what it refused (``bad``, ``first_problem``)."""

    def __init__(self, model: ModelInfo) -> None:
        self.model = model
        self._specs: dict[str, TensorInfo] = {t.name: t for t in model.outputs}
        self._batching = model.max_batch_size > 0
        # (request length, response length) -> (request header (b"" unless batching: the batch is in it),
        # response header, raw-field prefixes with their lengths)
        self._layouts: dict[tuple[int, int], tuple[bytes, bytes, tuple[tuple[bytes, int], ...]]] = {}
        self.bad = 0
        self.first_problem = ""

    def __call__(self, payload: bytes, response: bytes) -> str | None:
        layout = self._layouts.get((len(payload), len(response)))
        if layout is not None and response.startswith(layout[1]) and payload.startswith(layout[0]):
            pos = len(layout[1])
            for prefix, length in layout[2]:
                if not response.startswith(prefix, pos):
                    break
                pos += len(prefix) + length
            else:
                return None  # the layout of an answer already checked, to a like request: only values differ
        return self._refused(self._parsed(payload, response))

    def note(self) -> str:
        """One line for the results, or "" when every response passed."""
        if not self.bad:
            return ""
        return f"{self.bad} responses failed the response check ({BAD_RESPONSE}); first: {self.first_problem}"

    def _refused(self, problem: str | None) -> str | None:
        if problem is not None:
            self.bad += 1
            self.first_problem = self.first_problem or problem
        return problem

    def _parsed(self, payload: bytes, response: bytes) -> str | None:
        """The check from the parsed header; a layout that passes is remembered."""
        split = split_raw(response, _RESPONSE_RAW)
        try:
            if split is None:
                message = pb.ModelInferResponse.FromString(response)
                lengths = [len(raw) for raw in message.raw_output_contents]
            else:
                message = pb.ModelInferResponse.FromString(response[: split[0]])
                lengths = split[1]
        except DecodeError:
            return f"the answer is not a ModelInferResponse ({len(response)} bytes)"
        batch, request_header = self._batch_of(payload) if self._batching else (0, b"")
        problem = self._problem(message, lengths, batch)
        if problem is None and split is not None:
            if len(self._layouts) >= LAYOUTS_KEPT:
                self._layouts.clear()
            raws = tuple((bytes([_RESPONSE_RAW]) + _encode_varint(n), n) for n in lengths)
            self._layouts[(len(payload), len(response))] = (request_header, response[: split[0]], raws)
        return problem

    @staticmethod
    def _batch_of(payload: bytes) -> tuple[int, bytes]:
        """The request's batch size (its first input's first dim; 0 if unknown) and its header bytes."""
        split = split_raw(payload, _REQUEST_RAW)
        header = payload[: split[0]] if split is not None else payload
        try:
            request = pb.ModelInferRequest.FromString(header)
        except DecodeError:
            return 0, header
        if not request.inputs or not request.inputs[0].shape:
            return 0, header
        return int(request.inputs[0].shape[0]), header

    def _problem(self, message: pb.ModelInferResponse, raw_lengths: list[int], batch: int) -> str | None:
        outputs = message.outputs
        if not outputs:
            return "the answer has no outputs"
        if raw_lengths and len(raw_lengths) != len(outputs):
            return f"{len(outputs)} outputs but {len(raw_lengths)} raw_output_contents"
        seen: set[str] = set()
        for index, tensor in enumerate(outputs):
            name = tensor.name
            what = f"output {name!r}"
            if name in seen:
                return f"{what} appears twice"
            seen.add(name)
            spec = self._specs.get(name)
            if spec is None and self._specs:
                return f"unexpected {what}; the model's outputs are {', '.join(map(repr, self._specs))}"
            shape = tuple(tensor.shape)
            if any(d < 0 for d in shape):
                return f"{what} has shape {list(shape)} with a negative dim"
            if spec is not None:
                if spec.datatype and tensor.datatype != spec.datatype:
                    return f"{what} is {tensor.datatype or 'untyped'}, the model's metadata says {spec.datatype}"
                expected = self._expected_shape(spec, batch)
                if len(shape) != len(expected) or any(e >= 0 and e != d for e, d in zip(expected, shape)):
                    return f"{what} has shape {list(shape)}, expected {list(expected)}"
            problem = self._data_problem(tensor, shape, raw_lengths[index] if raw_lengths else None)
            if problem is not None:
                return f"{what}: {problem}"
        missing = [name for name in self._specs if name not in seen]
        if missing:
            return f"the answer lacks output(s) {', '.join(map(repr, missing))}"
        return None

    def _expected_shape(self, spec: TensorInfo, batch: int) -> tuple[int, ...]:
        if self._batching and spec.shape and batch > 0:
            return (batch, *spec.shape[1:])
        return spec.shape

    @staticmethod
    def _data_problem(tensor, shape: tuple[int, ...], raw_length: int | None) -> str | None:
        datatype = tensor.datatype
        try:
            itemsize = numpy_dtype(datatype).itemsize
        except CodecError as exc:
            return str(exc)
        count = math.prod(shape)
        if raw_length is not None:
            if datatype == "BYTES":
                if raw_length < 4 * count:
                    return f"BYTES {list(shape)} needs at least {4 * count} bytes, got {raw_length}"
            elif raw_length != count * itemsize:
                return f"{datatype} {list(shape)} needs {count * itemsize} bytes, got {raw_length}"
            return None
        if tensor.HasField("contents"):
            field = TYPED_FIELD_BY_DATATYPE.get(datatype)
            if field is None:
                return f"{datatype} has no typed contents (raw only)"
            values = len(getattr(tensor.contents, field))
            if values != count:
                return f"{datatype} {list(shape)} needs {count} values in {field}, got {values}"
            return None
        if count:
            return "no data (neither raw nor typed contents)"
        return None


# --- --validate full ---


class ReferenceCheck(ResponseCheck):
    """The basic check, then each answer compared with the first answer to the same request."""

    def __init__(self, model: ModelInfo, *, references: int = REFERENCES, max_bytes: int = REFERENCE_BYTES) -> None:
        super().__init__(model)
        # request bytes -> (first answer, its outputs decoded, their datatypes)
        self._references: dict[bytes, tuple[bytes, dict[str, np.ndarray], dict[str, str]]] = {}
        self._room = references
        self._bytes_left = max_bytes
        self.compared = 0  # answers compared with a reference

    def __call__(self, payload: bytes, response: bytes) -> str | None:
        problem = super().__call__(payload, response)
        if problem is None:
            problem = self._refused(self._against_reference(bytes(payload), response))
        return problem

    def _against_reference(self, key: bytes, response: bytes) -> str | None:
        reference = self._references.get(key)
        if reference is None and (self._room <= 0 or self._bytes_left < len(response)):
            return None  # beyond the sample: the basic check only
        if reference is not None:
            self.compared += 1
            if response == reference[0]:
                return None
        try:
            message = pb.ModelInferResponse.FromString(response)
            arrays = output_arrays(message)
        except (DecodeError, CodecError) as exc:
            return f"cannot decode the answer: {exc}"
        if reference is None:
            self._references[key] = (response, arrays, {t.name: t.datatype for t in message.outputs})
            self._room -= 1
            self._bytes_left -= len(response)
            return None
        return compare_outputs(arrays, reference[1], reference[2])


def compare_outputs(
    got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], datatypes: Mapping[str, str]
) -> str | None:
    """None if ``got`` matches ``expected``: exactly, or for floats within RTOL x the largest reference magnitude."""
    for name, want in expected.items():
        have = got.get(name)
        what = f"output {name!r} differs from the first answer to the same request"
        if have is None:
            return f"{what}: it is missing"
        if have.shape != want.shape:
            return f"{what}: shape {list(have.shape)}, first {list(want.shape)}"
        rtol = RTOL.get(datatypes.get(name, ""))
        if rtol is None:  # integers, BOOL, BYTES: equal or not
            unequal = np.flatnonzero(have.reshape(-1) != want.reshape(-1))
            if len(unequal):
                return f"{what}: {len(unequal)} of {want.size} elements, first at {int(unequal[0])}"
            continue
        a, b = have.astype(np.float64).reshape(-1), want.astype(np.float64).reshape(-1)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - b)
        diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0  # equal infinities, NaN where the first had NaN
        finite = np.abs(b[np.isfinite(b)])
        tolerance = rtol * float(finite.max()) if finite.size else 0.0
        bad = np.flatnonzero(~(diff <= tolerance))  # NaN fails too
        if len(bad):
            worst = int(bad[np.argmax(np.nan_to_num(diff[bad], nan=np.inf))])
            return f"{what}: |diff| {diff[worst]:.3g} at element {worst}, tolerance {tolerance:.3g}"
    return None


# --- the transport that checks ---


class CheckedTransport:
    """Wraps a transport: an OK answer that fails ``check`` raises ``RequestFailed("BAD_RESPONSE", why)``,
    so the dispatcher counts it through its ordinary error path (results ``errors``, the verdict's errors
    check). Everything else is the wrapped transport's."""

    def __init__(self, inner: Transport, check: Callable[[bytes, bytes], str | None]) -> None:
        self.inner = inner
        self.check = check

    async def infer(self, payload: bytes, timeout_s: float | None = None) -> bytes:
        response = await self.inner.infer(payload, timeout_s)
        problem = self.check(payload, response)
        if problem is not None:
            raise RequestFailed(BAD_RESPONSE, problem)
        return response

    async def model_info(self, model: str, version: str = "") -> ModelInfo:
        return await self.inner.model_info(model, version)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:  # target, model_statistics, server_ready, ...
        return getattr(self.inner, name)


def checked(transport: Transport, model: ModelInfo, mode: str = "basic") -> Transport:
    """``transport`` with every answer checked as ``mode`` says (see the module docstring)."""
    match mode:
        case "none":
            return transport
        case "basic":
            return CheckedTransport(transport, ResponseCheck(model))
        case "full":
            return CheckedTransport(transport, ReferenceCheck(model))
        case _:
            raise ValueError(f"validate mode {mode!r}; expected one of {', '.join(MODES)}")
