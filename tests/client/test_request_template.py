"""Requests cut from a template are byte for byte those numpy and protobuf build, for every shape of input."""

from __future__ import annotations

import numpy as np
import pytest

from tailmark.client.errors import ConfigError
from tailmark.client.request_template import varint
from tailmark.client.samples import SamplePool, random_pool
from tailmark.client.transport import ModelInfo, TensorInfo
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import decode_raw


def model(*inputs: tuple[str, str, tuple[int, ...]], max_batch_size: int = 0, name: str = "m") -> ModelInfo:
    return ModelInfo(name, "1", "test", tuple(TensorInfo(*i) for i in inputs), (), max_batch_size)


MODELS = {
    "fp32 [-1]": model(("INPUT0", "FP32", (-1,))),
    "int64 tokens, batching": model(("input_ids", "INT64", (-1, -1)), max_batch_size=4),
    "bytes [-1]": model(("TEXT", "BYTES", (-1,))),
    "axis not first": model(("X", "FP16", (3, -1, 2))),
    "bf16, batching": model(("X", "BF16", (-1, -1, 4)), max_batch_size=3),
    "bool [-1]": model(("MASK", "BOOL", (-1,))),
    "two variable dims": model(("X", "INT32", (-1, 2, -1))),
    "mixed": model(
        ("input_ids", "INT64", (-1, -1)),
        ("pixels", "FP32", (-1, 3, 4)),
        ("mask", "UINT8", (-1, -1)),
        max_batch_size=2,
    ),
}
SIZES = [1, 2, 15, 16, 17, 31, 32, 33, 100, 1020, 4099]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("version", ["", "3"])
def test_cut_requests_equal_the_protobuf_build(name: str, version: str) -> None:
    info = MODELS[name]
    pool = random_pool(info, count=5, seed=7, version=version)
    resized = pool.resized_inputs("tokens")
    assert resized
    batches = [1, 2] + ([info.max_batch_size] if info.max_batch_size > 2 else []) if info.max_batch_size else [1]
    for batch in batches:
        for sample in (0, 3, 4):  # 4 + batch wraps around the pool
            for size in SIZES:
                cut = pool.template(sample, batch, resized).request(size)
                assert cut == pool.build_with_numpy(sample, batch, size, resized), (batch, sample, size)


def test_cut_bytes_elements_of_different_lengths_and_unicode() -> None:
    """BYTES rows are cut at element boundaries although elements differ in length."""
    info = model(("TEXT", "BYTES", (-1, -1, 2)), max_batch_size=2)
    words = np.array(
        [[["a", "bb"], ["ccc", ""], ["héllo", "日本"]], [["x" * 300, "y"], ["z", "ww"], ["", "q"]]], dtype=object
    )
    pool = SamplePool(info, {"TEXT": words}, count=2)
    for batch in (1, 2):
        for size in (1, 2, 3, 4, 5, 7, 300):
            request = pool.template(1, batch, ("TEXT",)).request(size)
            assert request == pool.build_with_numpy(1, batch, size, ("TEXT",))
    parsed = pb.ModelInferRequest.FromString(pool.payload(0, 1, 5, ("TEXT",)))
    values = decode_raw(parsed.raw_input_contents[0], "BYTES", parsed.inputs[0].shape)
    assert list(parsed.inputs[0].shape) == [1, 5, 2]
    assert [v.decode() for v in values.reshape(-1)] == ["a", "bb", "ccc", "", "héllo", "日本", "a", "bb", "ccc", ""]


def test_fixed_inputs_keep_their_bytes_beside_a_resized_one() -> None:
    info = MODELS["mixed"]
    pool = random_pool(info, count=3, seed=1)
    auto = pool.resized_inputs("auto")
    assert auto == ("input_ids", "mask")  # pixels is FP32 and has no variable dim
    parsed = pb.ModelInferRequest.FromString(pool.payload(1, 2, 40, auto))
    assert [list(t.shape) for t in parsed.inputs] == [[2, 40], [2, 3, 4], [2, 40]]
    plain = pb.ModelInferRequest.FromString(pool.payload(1, 2))
    assert parsed.raw_input_contents[1] == plain.raw_input_contents[1]


def test_payload_uses_templates_and_caches_by_size() -> None:
    pool = random_pool(MODELS["fp32 [-1]"], count=4, seed=1)
    resized = ("INPUT0",)
    first = pool.payload(2, 1, 500, resized)
    assert pool.payload(2, 1, 500, resized) is first  # cached: built once
    assert pool.builds == 1
    pool.use_templates = False
    assert pool.payload(2, 1, 501, resized) == pool.template(2, 1, resized).request(501)


def test_a_payload_size_that_resizes_nothing_reuses_the_plain_request() -> None:
    """A fixed-shape model (or --resize-inputs none) sends one request per sample, whatever the trace says."""
    fixed = random_pool(model(("input", "FP32", (-1, 3, 8, 8)), max_batch_size=8), count=2, seed=1)
    assert fixed.resized_inputs("tokens") == ()
    plain = fixed.payload(0, 1)
    assert all(fixed.payload(0, 1, size, ()) is plain for size in (5, 6, 700))
    assert fixed.builds == 1


def test_empty_samples_along_the_axis_are_refused() -> None:
    info = model(("X", "FP32", (-1,)))
    pool = SamplePool(info, {"X": np.zeros((2, 0), np.float32)}, count=2)
    with pytest.raises(ConfigError, match="empty along the variable dimension"):
        pool.payload(0, 1, 10, ("X",))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    message = pb.ModelInferRequest.InferInputTensor(shape=[value])
    assert message.SerializeToString() == b"\x1a" + varint(len(varint(value))) + varint(value)


def test_the_request_cache_is_bounded_in_bytes(monkeypatch) -> None:
    """Token-sized requests are large and mostly new: the cache keeps at most CACHE_BYTES of them."""
    from tailmark.client import samples

    monkeypatch.setattr(samples, "CACHE_BYTES", 100_000)
    pool = random_pool(MODELS["fp32 [-1]"], count=4, seed=1)
    for size in range(1000, 1100):  # ~4 KB each
        pool.payload(size % 4, 1, size, ("INPUT0",))
    assert 0 < pool._cached_bytes <= 100_000
    assert pool._cached_bytes == sum(map(len, pool._cache.values()))
    huge = pool.payload(0, 1, 50_000, ("INPUT0",))  # one request over the bound is still kept
    assert list(pool._cache.values()) == [huge]
