"""Tensor codec: numpy arrays <-> KServe-v2 tensors (datatype strings, raw little-endian bytes).

Raw contents are row-major with no padding. Fixed-size datatypes decode zero-copy: the array is a
read-only view of the request's bytes. BYTES elements are a 4-byte little-endian length followed by
the bytes, concatenated; they decode to a numpy object array of ``bytes``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import ml_dtypes
import numpy as np

# KServe datatype -> numpy dtype (explicitly little-endian: the wire is little-endian)
_NUMPY_BY_DATATYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
DATATYPES: tuple[str, ...] = tuple(_NUMPY_BY_DATATYPE)
_LENGTH = struct.Struct("<I")


class CodecError(ValueError):
    """A tensor's bytes do not match its datatype and shape (the message says how)."""


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a KServe datatype; CodecError if the datatype is unknown."""
    try:
        return _NUMPY_BY_DATATYPE[datatype]
    except KeyError:
        raise CodecError(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def kserve_datatype(dtype: np.dtype | type) -> str:
    """The KServe datatype of a numpy dtype (str/bytes/object arrays are BYTES); byte order is ignored."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    if dtype == ml_dtypes.bfloat16:
        return "BF16"
    for name, candidate in _NUMPY_BY_DATATYPE.items():
        if name != "BF16" and candidate.kind == dtype.kind and candidate.itemsize == dtype.itemsize:
            return name
    raise CodecError(f"numpy dtype {dtype} has no KServe datatype")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def expected_byte_size(datatype: str, shape: Sequence[int]) -> int | None:
    """Bytes a raw tensor of this datatype and shape must have; None for BYTES (variable)."""
    dtype = numpy_dtype(datatype)
    if dtype.kind == "O":
        return None
    return element_count(shape) * dtype.itemsize


def decode_raw(raw: bytes | memoryview, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """Raw tensor bytes -> array of ``shape``; zero-copy (read-only view) for fixed-size types."""
    if any(int(d) < 0 for d in shape):
        raise CodecError(f"shape {list(shape)} has a negative dimension")
    dtype = numpy_dtype(datatype)
    if dtype.kind == "O":
        return _decode_bytes(raw, shape)
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise CodecError(f"{datatype} tensor of shape {list(shape)} needs {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def encode_raw(array: np.ndarray) -> bytes:
    """Array -> raw tensor bytes (little-endian, row-major)."""
    if array.dtype.kind in "OSU":
        return _encode_bytes(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def _decode_bytes(raw: bytes | memoryview, shape: Sequence[int]) -> np.ndarray:
    count = element_count(shape)
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise CodecError(f"BYTES tensor ends inside the length prefix of element {index} of {count}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise CodecError(f"BYTES element {index} claims {length} bytes but only {len(view) - offset} remain")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise CodecError(f"BYTES tensor of {count} elements has {len(view) - offset} trailing bytes")
    result = np.empty(count, dtype=object)
    result[:] = items
    return result.reshape(shape)


def _encode_bytes(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


# --- typed contents (InferTensorContents), accepted for requests that do not send raw bytes ---

# datatype -> name of the InferTensorContents field that carries it
TYPED_FIELD_BY_DATATYPE = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_typed(contents, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """Typed ``InferTensorContents`` -> array; FP16/BF16 have no typed form (raw only)."""
    field = TYPED_FIELD_BY_DATATYPE.get(datatype)
    if field is None:
        raise CodecError(f"{datatype} tensors can only be sent as raw contents")
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise CodecError(f"{datatype} tensor of shape {list(shape)} needs {count} values in {field}, got {len(values)}")
    if datatype == "BYTES":
        result = np.empty(count, dtype=object)
        result[:] = list(values)
        return result.reshape(shape)
    return np.asarray(values, dtype=numpy_dtype(datatype)).reshape(shape)
