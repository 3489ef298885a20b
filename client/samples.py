"""The sample pool: input tensors to send, and their requests serialised once.

Samples are random tensors shaped from the model's metadata (seeded), or real data from a ``.npy``
(single-input models), ``.npz`` (one array per input name) or JSON file (``{"INPUT": [[...], ...]}``);
the first axis of a file's array indexes samples. A request is serialised once per distinct
(sample, batch size, payload size) and reused, so the hot path only sends bytes.

A payload size (a trace's token count) resizes the first variable dimension of the inputs that
``resized_inputs`` picks for the run's ``resize_inputs`` choice. Those requests are cut from a
``RequestTemplate`` encoded once per (sample, batch size): a new size costs a bytes repetition, not
numpy and protobuf work (the dispatcher also builds them ahead of their instant: client/lookahead.py).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tailmark.client.errors import ConfigError
from tailmark.client.request_template import RequestTemplate
from tailmark.client.settings import RESIZE_CHOICES
from tailmark.client.transport import ModelInfo, TensorInfo
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import encode_raw, numpy_dtype

DEFAULT_VARIABLE_DIM = 16  # a -1 dimension with no --shape and no payload size from the trace
CACHE_ENTRIES = 4096  # serialised requests kept (distinct sample x batch x payload combinations)
CACHE_BYTES = 64 << 20  # ... and at most this many bytes of them (the newest one is always kept)
TEMPLATE_ENTRIES = 1024  # (sample, batch) templates kept for cutting payload sizes
# datatypes of token-like inputs: token ids (integers) and text (BYTES)
TOKEN_DATATYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BYTES"})


def resized_inputs(model: ModelInfo, choice: str) -> tuple[str, ...]:
    """The inputs a payload size (a trace's token count) resizes under ``choice``.

    ``tokens``: every input with a variable (-1) dimension; ``none``: no input; ``auto``: the variable
    inputs whose datatype is token-like (an integer or BYTES: token ids, text), so that a model taking
    images, audio or embeddings keeps its own shapes unless ``tokens`` is asked for.
    """
    batching = model.max_batch_size > 0
    variable = [t for t in model.inputs if -1 in (t.shape[1:] if batching else t.shape)]
    match choice:
        case "tokens":
            return tuple(t.name for t in variable)
        case "auto":
            return tuple(t.name for t in variable if t.datatype in TOKEN_DATATYPES)
        case "none":
            return ()
        case _:
            raise ConfigError(f"resize_inputs={choice} requested; must be one of {', '.join(RESIZE_CHOICES)}")


class SamplePool:
    """Distinct samples of one model, and the serialised requests built from them."""

    def __init__(
        self,
        model: ModelInfo,
        samples: Mapping[str, np.ndarray],
        *,
        count: int,
        model_version: str = "",
    ) -> None:
        self.model = model
        self.count = count
        self._samples = samples  # input name -> array of shape (count, *per-sample shape)
        self._version = model_version
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._templates: OrderedDict[tuple, RequestTemplate] = OrderedDict()
        self.use_templates = True  # False: numpy + protobuf per new payload size (the old path; a bench baseline)
        self.builds = 0  # requests built (cache misses)

    @property
    def batching(self) -> bool:
        return self.model.max_batch_size > 0

    def resized_inputs(self, choice: str) -> tuple[str, ...]:
        """The inputs a payload size resizes under ``choice`` (auto, tokens, none); see ``resized_inputs``."""
        return resized_inputs(self.model, choice)

    def payload(
        self, sample: int, batch_size: int = 1, payload_size: int = 0, resized: tuple[str, ...] | None = None
    ) -> bytes:
        """The serialised ModelInferRequest for ``batch_size`` samples starting at ``sample``, the ``resized``
        inputs' variable dimension set to ``payload_size`` (0: the samples' own shape; ``resized`` None:
        every variable input)."""
        if resized is None:
            resized = resized_inputs(self.model, "tokens")
        if not resized:
            payload_size = 0
        key = (sample % self.count, batch_size, payload_size, resized if payload_size else ())
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        data = self._build(*key)
        self.builds += 1
        self._cache[key] = data
        self._cached_bytes += len(data)
        while len(self._cache) > 1 and (len(self._cache) > CACHE_ENTRIES or self._cached_bytes > CACHE_BYTES):
            self._cached_bytes -= len(self._cache.popitem(last=False)[1])
        return data

    def _check_batch(self, batch_size: int) -> None:
        if batch_size > 1 and not self.batching:
            raise ConfigError(f"model {self.model.name!r} takes no batch dimension; batch size {batch_size} refused")
        if self.batching and batch_size > self.model.max_batch_size:
            raise ConfigError(
                f"batch size {batch_size} exceeds model {self.model.name!r}'s "
                f"max_batch_size {self.model.max_batch_size}"
            )

    def _build(self, sample: int, batch_size: int, payload_size: int, resized: tuple[str, ...]) -> bytes:
        if payload_size and self.use_templates:
            return self.template(sample, batch_size, resized).request(payload_size)
        return self.build_with_numpy(sample, batch_size, payload_size, resized)

    def template(self, sample: int, batch_size: int, resized: tuple[str, ...]) -> RequestTemplate:
        """The request for (sample, batch) encoded once, to cut any payload size from (kept in an LRU)."""
        key = (sample % self.count, batch_size, resized)
        template = self._templates.get(key)
        if template is not None:
            self._templates.move_to_end(key)
            return template
        self._check_batch(batch_size)
        template = RequestTemplate(
            model_name=self.model.name,
            model_version=self._version,
            tensors=self.model.inputs,
            arrays=[self._samples[t.name][self._indices(sample, batch_size)] for t in self.model.inputs],
            batching=self.batching,
            resized=resized,
        )
        self._templates[key] = template
        if len(self._templates) > TEMPLATE_ENTRIES:
            self._templates.popitem(last=False)
        return template

    def _indices(self, sample: int, batch_size: int) -> list[int]:
        return [(sample + i) % self.count for i in range(batch_size)]

    def build_with_numpy(self, sample: int, batch_size: int, payload_size: int, resized: tuple[str, ...]) -> bytes:
        """The request built with numpy and protobuf: the reference the templates must match byte for byte."""
        self._check_batch(batch_size)
        request = pb.ModelInferRequest(model_name=self.model.name, model_version=self._version)
        indices = self._indices(sample, batch_size)
        for tensor in self.model.inputs:
            array = self._samples[tensor.name][indices]
            if payload_size and tensor.name in resized:
                array = _resize_variable(array, tensor, payload_size, self.batching)
            if not self.batching:
                array = array[0]
            request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=array.shape)
            request.raw_input_contents.append(encode_raw(array))
        return request.SerializeToString()


def _resize_variable(array: np.ndarray, tensor: TensorInfo, size: int, batching: bool) -> np.ndarray:
    """Set the first variable dimension to ``size`` (the trace's payload rule), tiling the sample's data."""
    dims = tensor.shape[1:] if batching else tensor.shape
    if -1 not in dims:
        return array  # fixed-shape input: payload size does not apply
    axis = 1 + dims.index(-1)
    reps = -(-size // array.shape[axis])
    tiled = np.concatenate([array] * reps, axis=axis) if reps > 1 else array
    return np.take(tiled, np.arange(size), axis=axis)


def per_sample_shape(tensor: TensorInfo, batching: bool, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The shape of one sample: the batch dim dropped, -1 dims from ``--shape`` or a default.

    A ``--shape`` must keep the model's rank and fixed dims (ConfigError otherwise)."""
    dims = tensor.shape[1:] if batching else tensor.shape
    if tensor.name in shapes:
        shape = tuple(shapes[tensor.name])
        if len(shape) != len(dims) or any(d not in (-1, g) for d, g in zip(dims, shape)):
            given = ",".join(map(str, shape))
            raise ConfigError(
                f"--shape {tensor.name}:{given}: the model takes {list(dims)} per sample (-1: variable); "
                "give every dim, the fixed ones as they are"
            )
        return shape
    return tuple(DEFAULT_VARIABLE_DIM if d == -1 else d for d in dims)


def random_pool(
    model: ModelInfo, *, count: int, seed: int, shapes: Mapping[str, tuple[int, ...]] | None = None, version: str = ""
) -> SamplePool:
    """``count`` seeded random samples; ConfigError for a ``--shape`` naming no input of the model."""
    names = [tensor.name for tensor in model.inputs]
    unknown = [name for name in shapes or {} if name not in names]
    if unknown:
        raise ConfigError(
            f"--shape {unknown[0]}: model {model.name!r} has no input {unknown[0]!r} (its inputs: {', '.join(names)})"
        )
    rng = np.random.default_rng(seed)
    batching = model.max_batch_size > 0
    samples = {}
    for tensor in model.inputs:
        shape = (count, *per_sample_shape(tensor, batching, shapes or {}))
        samples[tensor.name] = _random_array(rng, tensor.datatype, shape)
    return SamplePool(model, samples, count=count, model_version=version)


def _random_array(rng: np.random.Generator, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    if datatype == "BYTES":
        values = rng.integers(0, 2**31, size=shape)
        return np.vectorize(lambda v: str(v).encode(), otypes=[object])(values)
    dtype = numpy_dtype(datatype)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def file_pool(model: ModelInfo, path: Path, *, version: str = "") -> SamplePool:
    """Samples from a data file; every model input must be present with a matching dtype."""
    arrays = _load_arrays(path, model)
    counts = {name: len(array) for name, array in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ConfigError(f"{path}: inputs hold different sample counts: {counts}")
    batching = model.max_batch_size > 0
    for tensor in model.inputs:
        array = arrays[tensor.name]
        expected = tensor.shape[1:] if batching else tensor.shape
        got = array.shape[1:]
        if len(got) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, got)):
            raise ConfigError(
                f"{path}: input {tensor.name!r} samples have shape {list(got)}, model expects {list(expected)}"
            )
        if tensor.datatype != "BYTES":
            arrays[tensor.name] = array.astype(numpy_dtype(tensor.datatype), copy=False)
    return SamplePool(model, arrays, count=next(iter(counts.values())), model_version=version)


def _load_arrays(path: Path, model: ModelInfo) -> dict[str, np.ndarray]:
    names = [t.name for t in model.inputs]
    try:
        match path.suffix:
            case ".npy":
                if len(names) != 1:
                    raise ConfigError(f"{path}: a .npy file feeds one input; model has {names}: use .npz")
                loaded = {names[0]: np.load(path, allow_pickle=False)}
            case ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    loaded = {name: npz[name] for name in npz.files}
            case ".json":
                raw = json.loads(path.read_text())
                if not isinstance(raw, dict):
                    raise ConfigError(f"{path}: expected an object mapping input names to lists of samples")
                loaded = {name: np.asarray(value) for name, value in raw.items()}
            case _:
                raise ConfigError(f"{path}: input data must be .npy, .npz or .json")
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: cannot read input data: {exc}") from None
    missing = [n for n in names if n not in loaded]
    if missing:
        raise ConfigError(f"{path}: no data for model inputs {missing} (has {sorted(loaded)})")
    return {name: loaded[name] for name in names}
