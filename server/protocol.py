"""KServe-v2 request/response <-> numpy tensors for one model, with every check a client can fail."""

from __future__ import annotations

import numpy as np

from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import CodecError, decode_raw, decode_typed, encode_raw, numpy_dtype
from tailmark.server.backends.base import Tensors
from tailmark.server.errors import InvalidInput, Unsupported
from tailmark.server.repository import LoadedModel

SHARED_MEMORY_KEYS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def decode_inputs(request: pb.ModelInferRequest, model: LoadedModel) -> tuple[Tensors, int]:
    """The request's input tensors, checked against the model; returns (tensors, batch size)."""
    what = f"model {model.name!r}"
    raw = request.raw_input_contents
    inputs = request.inputs
    for tensor in inputs:
        if tensor.parameters and any(key in tensor.parameters for key in SHARED_MEMORY_KEYS):
            raise Unsupported(f"input {tensor.name!r}: shared memory is not supported by this server; send raw bytes")
    if raw and len(raw) != len(inputs):
        raise InvalidInput(f"{what}: request has {len(inputs)} inputs but {len(raw)} raw_input_contents")
    if raw:
        for tensor in inputs:
            if tensor.HasField("contents"):  # the protocol: raw_input_contents, or typed contents, never both
                raise InvalidInput(
                    f"{what}: input {tensor.name!r} has typed contents in a request that carries "
                    "raw_input_contents; send one or the other"
                )
    tensors: Tensors = {}
    by_name = model.input_by_name
    for index, tensor in enumerate(inputs):
        spec = by_name.get(tensor.name)
        if spec is None:
            expected = ", ".join(repr(n) for n in by_name)
            raise InvalidInput(f"{what}: unexpected input {tensor.name!r}; expected {expected}")
        if tensor.name in tensors:
            raise InvalidInput(f"{what}: input {tensor.name!r} appears twice")
        if tensor.datatype != spec.datatype:
            raise InvalidInput(
                f"{what}: input {tensor.name!r} has datatype {tensor.datatype}, expected {spec.datatype}"
            )
        shape = tuple(tensor.shape)
        if not spec.accepts(shape):
            raise InvalidInput(f"{what}: input {tensor.name!r} has shape {list(shape)}, expected {list(spec.shape)}")
        try:
            if raw:
                tensors[tensor.name] = decode_raw(raw[index], tensor.datatype, shape)
            elif tensor.HasField("contents"):
                tensors[tensor.name] = decode_typed(tensor.contents, tensor.datatype, shape)
            else:
                raise InvalidInput(f"{what}: input {tensor.name!r} has no data (neither raw nor typed contents)")
        except CodecError as exc:
            raise InvalidInput(f"{what}: input {tensor.name!r}: {exc}") from None
    if len(tensors) != len(by_name):
        missing = [name for name in by_name if name not in tensors]
        raise InvalidInput(f"{what}: missing inputs {', '.join(repr(n) for n in missing)}")
    return tensors, _batch_size(tensors, model)


def _batch_size(tensors: Tensors, model: LoadedModel) -> int:
    max_batch = model.config.max_batch_size
    if max_batch == 0:
        return 1
    sizes = {array.shape[0] for array in tensors.values()}
    if len(sizes) != 1:
        raise InvalidInput(f"model {model.name!r}: inputs disagree on the batch size: {sorted(sizes)}")
    batch = sizes.pop()
    if not 1 <= batch <= max_batch:
        raise InvalidInput(f"model {model.name!r}: batch size {batch} is outside 1..{max_batch} (max_batch_size)")
    return batch


def requested_outputs(request: pb.ModelInferRequest, model: LoadedModel) -> list[str]:
    """Names of the outputs to return: those listed, or all of them when none are."""
    if not request.outputs:
        return model.output_names
    names = []
    for output in request.outputs:
        if output.name not in model.output_by_name:
            expected = ", ".join(repr(n) for n in model.output_by_name)
            raise InvalidInput(f"model {model.name!r}: unknown output {output.name!r}; expected {expected}")
        if any(key in output.parameters for key in SHARED_MEMORY_KEYS):
            raise Unsupported(f"output {output.name!r}: shared memory is not supported by this server")
        if "classification" in output.parameters:
            raise Unsupported(f"output {output.name!r}: the classification extension is not supported")
        names.append(output.name)
    return names


def encode_response(
    request: pb.ModelInferRequest, model: LoadedModel, outputs: Tensors, names: list[str]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
    for name in names:
        array = outputs.get(name)
        if array is None:
            raise RuntimeError(f"model produced no output {name!r}")
        array = np.asarray(array)
        spec = model.output_by_name[name]
        response.outputs.add(name=name, datatype=spec.datatype, shape=array.shape)
        response.raw_output_contents.append(encode_raw(array.astype(_dtype_of(spec.datatype, array), copy=False)))
    return response


def _dtype_of(datatype: str, array: np.ndarray) -> np.dtype:
    return array.dtype if datatype == "BYTES" else numpy_dtype(datatype)


def scheduling_parameters(request: pb.ModelInferRequest) -> tuple[int, int]:
    """The request's ``priority`` level and queue ``timeout`` in µs (0: not given), as tritonclient sends them."""
    values = []
    for key in ("priority", "timeout"):
        parameter = request.parameters.get(key)
        if parameter is None:
            values.append(0)
            continue
        kind = parameter.WhichOneof("parameter_choice")
        if kind not in ("int64_param", "uint64_param"):
            raise InvalidInput(f"parameter {key!r} must be an integer, got {kind or 'nothing'}")
        value = getattr(parameter, kind)
        if value < 0:
            raise InvalidInput(f"parameter {key!r} is {value}; must be >= 0")
        values.append(value)
    return values[0], values[1]
