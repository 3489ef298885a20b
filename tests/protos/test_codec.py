import ml_dtypes
import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from tailmark.protos import codec


def example(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[b"a", b""], [b"\x00\x01", b"xyz" * 100]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    return (np.arange(4).reshape(2, 2) - 1).astype(codec.numpy_dtype(datatype))


@pytest.mark.parametrize("datatype", codec.DATATYPES)
def test_round_trip_every_datatype(datatype):
    array = example(datatype)
    raw = codec.encode_raw(array)
    if datatype != "BYTES":
        assert len(raw) == codec.expected_byte_size(datatype, array.shape)
    back = codec.decode_raw(raw, datatype, array.shape)
    assert back.shape == array.shape
    assert codec.kserve_datatype(back.dtype) == datatype
    assert back.tolist() == array.tolist()


@pytest.mark.parametrize("datatype", [d for d in codec.DATATYPES if d != "BYTES"])
def test_fixed_size_decode_is_zero_copy(datatype):
    raw = codec.encode_raw(example(datatype))
    view = codec.decode_raw(raw, datatype, (2, 2))
    assert np.shares_memory(view, np.frombuffer(raw, dtype=np.uint8))
    assert not view.flags.writeable


def test_wire_is_little_endian():
    assert codec.encode_raw(np.array([1], dtype=">i4")) == b"\x01\x00\x00\x00"
    assert codec.encode_raw(np.array([1.0], dtype=np.float16)) == np.float16(1.0).tobytes()
    bf16 = codec.encode_raw(np.array([1.0], dtype=ml_dtypes.bfloat16))
    assert bf16 == np.array([1.0], np.float32).tobytes()[2:]  # bf16 is the high half of fp32


def test_bytes_match_tritonclient_serialisation():
    array = np.array([b"tail", b"", b"mark", b"\xff" * 7], dtype=object)
    ours = codec.encode_raw(array)
    assert ours == serialize_byte_tensor(array).item()
    assert list(codec.decode_raw(ours, "BYTES", [4])) == list(deserialize_bytes_tensor(ours))
    assert ours[:4] == (4).to_bytes(4, "little")


def test_str_arrays_encode_as_utf8_bytes():
    raw = codec.encode_raw(np.array(["ü"]))
    assert raw == (2).to_bytes(4, "little") + "ü".encode()


@pytest.mark.parametrize(
    ("raw", "datatype", "shape", "message"),
    [
        (b"\x00" * 7, "FP32", [2], "needs 8 bytes, got 7"),
        (b"\x00" * 9, "INT64", [1], "needs 8 bytes, got 9"),
        (b"\x00\x00", "BYTES", [1], "inside the length prefix"),
        (b"\x05\x00\x00\x00ab", "BYTES", [1], "claims 5 bytes"),
        (b"\x01\x00\x00\x00ab", "BYTES", [1], "trailing bytes"),
        (b"", "FP32", [-1], "negative dimension"),
        (b"", "FP8", [1], "unknown datatype"),
    ],
)
def test_bad_bytes_are_refused_with_the_reason(raw, datatype, shape, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.decode_raw(raw, datatype, shape)


def test_typed_contents():
    from tailmark.protos import inference_pb2 as pb

    contents = pb.InferTensorContents(int_contents=[1, 2, 3, 4])
    np.testing.assert_array_equal(codec.decode_typed(contents, "INT16", [2, 2]), [[1, 2], [3, 4]])
    with pytest.raises(codec.CodecError, match="only be sent as raw"):
        codec.decode_typed(contents, "FP16", [4])
    with pytest.raises(codec.CodecError, match="needs 3 values"):
        codec.decode_typed(contents, "INT32", [3])
