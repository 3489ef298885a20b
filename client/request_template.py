"""One (sample, batch) request encoded once, from which the request for any payload size is cut.

A payload size P sets the first variable dimension of each resized input to P, tiling the sample along
it (the trace's payload rule, ``samples._resize_variable``). In row-major order such a tensor is, for each
index of the dimensions before that axis (a "row", the batch dimension included), the row's own bytes
repeated P // n times and then cut after P % n positions, n being the sample's length on the axis. So
each row is encoded once here, and a new payload size costs a bytes repetition and a join: no numpy, no
protobuf.

The framing is what ``ModelInferRequest.SerializeToString`` writes for the same message: fields 1 and 2
(model name and version), then every ``inputs`` entry (field 5: name, datatype, packed shape), then every
``raw_input_contents`` entry (field 7). tests/client/test_request_template.py checks byte identity
against the protobuf build.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from tailmark.client.errors import ConfigError
from tailmark.client.transport import TensorInfo
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import encode_raw

_INPUTS_TAG = b"\x2a"  # ModelInferRequest.inputs: field 5, length-delimited
_RAW_TAG = b"\x3a"  # ModelInferRequest.raw_input_contents: field 7, length-delimited
_SHAPE_TAG = b"\x1a"  # InferInputTensor.shape: field 3, packed int64


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data


class _Input:
    """One input of the template: fixed (one encoding), or resizable along ``axis`` (one encoding per row)."""

    def __init__(self, tensor: TensorInfo, array: np.ndarray, axis: int | None, batching: bool) -> None:
        # name and datatype encoded once; the shape, which a payload size changes, is appended per request
        entry = pb.ModelInferRequest.InferInputTensor(name=tensor.name, datatype=tensor.datatype)
        self.head = entry.SerializeToString()
        self.shape = list(array.shape if batching else array.shape[1:])
        self.axis = None if axis is None else (axis if batching else axis - 1)  # in ``shape``
        if axis is None:
            self.raw = encode_raw(array)
            return
        length = array.shape[axis]
        if length == 0:
            raise ConfigError(
                f"input {tensor.name!r}: samples are empty along the variable dimension; cannot resize them"
            )
        rows = array.reshape(-1, *array.shape[axis:])
        self.length = length
        self.rows = [encode_raw(row) for row in rows]
        if array.dtype.kind in "OSU":  # BYTES: elements differ in length, so each row has its own offsets
            self.cuts = [_offsets(row) for row in rows]
        else:
            step = len(self.rows[0]) // length
            self.cuts = [range(0, step * (length + 1), step)] * len(rows)

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.rows)) if self.axis is not None else len(self.raw)

    def encode(self, size: int) -> tuple[bytes, bytes]:
        """The ``inputs`` entry and the raw contents for payload size ``size`` (0: the sample's own shape)."""
        if self.axis is None or size == 0:
            shape = self.shape
            raw = self.raw if self.axis is None else b"".join(self.rows)
        else:
            shape = self.shape.copy()
            shape[self.axis] = size
            whole, part = divmod(size, self.length)
            raw = b"".join([row * whole + row[: cuts[part]] for row, cuts in zip(self.rows, self.cuts)])
        tensor = self.head + _field(_SHAPE_TAG, b"".join(map(varint, shape))) if shape else self.head
        return _field(_INPUTS_TAG, tensor), raw


def _offsets(row: np.ndarray) -> list[int]:
    """Bytes of the encoded row up to each position along its first axis (0 .. n)."""
    offsets = [0]
    for position in range(len(row)):
        offsets.append(offsets[-1] + len(encode_raw(row[position : position + 1])))
    return offsets


class RequestTemplate:
    """The request for ``batch_size`` samples of one model, cut to any payload size by ``request``."""

    def __init__(
        self,
        *,
        model_name: str,
        model_version: str,
        tensors: Sequence[TensorInfo],
        arrays: Sequence[np.ndarray],
        batching: bool,
        resized: Collection[str],
    ) -> None:
        """``arrays``: each input's samples, shape (batch, *sample shape); ``resized``: inputs a size applies to."""
        self._head = pb.ModelInferRequest(model_name=model_name, model_version=model_version).SerializeToString()
        self._inputs = []
        for tensor, array in zip(tensors, arrays):
            dims = tensor.shape[1:] if batching else tensor.shape
            axis = 1 + dims.index(-1) if tensor.name in resized and -1 in dims else None
            self._inputs.append(_Input(tensor, array, axis, batching))

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self._inputs)

    def request(self, payload_size: int) -> bytes:
        """The serialised ModelInferRequest with the resized inputs' variable dimension set to ``payload_size``."""
        entries = []
        raws = []
        for item in self._inputs:
            entry, raw = item.encode(payload_size)
            entries.append(entry)
            raws.append(_RAW_TAG + varint(len(raw)))
            raws.append(raw)
        return b"".join([self._head, *entries, *raws])
