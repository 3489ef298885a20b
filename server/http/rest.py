"""KServe-v2 REST bodies <-> the core's protobuf messages, for the HTTP frontend.

A request (JSON tensors, or Triton's binary tensor extension: inputs with ``binary_data_size`` whose bytes
follow the JSON header, whose length ``Inference-Header-Content-Length`` gives) becomes a
ModelInferRequest with every input as ``raw_input_contents``, so the core validates and runs it exactly as
a gRPC one. The answer goes back as JSON ``data``, or binary for the outputs asked for in binary
(``parameters.binary_data`` per output, or ``binary_data_output`` for all).
"""

from __future__ import annotations

import json

import numpy as np

from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import CodecError, decode_raw, encode_raw, numpy_dtype
from tailmark.protos.rest_codec import ParameterError, flatten, json_data, parameters_from_json, parameters_to_json
from tailmark.server.errors import InvalidInput


def _parameters_from_json(target, values) -> None:
    if not isinstance(values, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    try:
        parameters_from_json(target, values)
    except ParameterError as exc:
        raise InvalidInput(str(exc)) from None


def _raw_from_json(name: str, datatype: str, shape: list[int], data) -> bytes:
    values = flatten(data)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: shape {shape} needs {count} values, 'data' holds {len(values)}")
    try:
        if datatype == "BYTES":
            items = np.empty(count, dtype=object)
            items[:] = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
            return encode_raw(items)
        dtype = numpy_dtype(datatype)
        if dtype.kind == "b" and not all(isinstance(v, bool) for v in values):
            raise InvalidInput(f"input {name!r}: BOOL data must be true/false")
        return encode_raw(np.asarray(values, dtype=dtype))
    except (TypeError, ValueError, OverflowError, CodecError) as exc:
        raise InvalidInput(f"input {name!r}: 'data' does not hold {datatype} values: {exc}") from None


def parse_infer(body: bytes, header_length: int | None, model: str, version: str) -> tuple[pb.ModelInferRequest, set]:
    """A REST infer body -> (ModelInferRequest, names of the outputs to answer in binary; "*": all)."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {header_length} exceeds the body's {len(body)} bytes")
    head = body if header_length is None else body[:header_length]
    try:
        document = json.loads(head)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; RecursionError: nested too deep
        raise InvalidInput(f"malformed JSON in the request: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InvalidInput("the request must be a JSON object with an 'inputs' list")
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=str(document.get("id", "") or ""))
    parameters = dict(document.get("parameters") or {})
    binary: set = {"*"} if parameters.pop("binary_data_output", False) else set()
    _parameters_from_json(request.parameters, parameters)
    offset = len(head)
    try:
        for tensor in document["inputs"]:
            name, datatype, shape = tensor["name"], tensor["datatype"], [int(d) for d in tensor["shape"]]
            numpy_dtype(datatype)
            tensor_parameters = dict(tensor.get("parameters") or {})
            size = tensor_parameters.pop("binary_data_size", None)
            entry = request.inputs.add(name=name, datatype=datatype, shape=shape)
            _parameters_from_json(entry.parameters, tensor_parameters)
            if size is not None:
                size = int(size)
                if size < 0 or offset + size > len(body):
                    raise InvalidInput(f"input {name!r}: binary_data_size {size} runs past the body's end")
                request.raw_input_contents.append(body[offset : offset + size])
                offset += size
            elif "data" in tensor:
                request.raw_input_contents.append(_raw_from_json(name, datatype, shape, tensor["data"]))
            else:
                raise InvalidInput(f"input {name!r} has neither 'data' nor binary_data_size")
        for output in document.get("outputs") or ():
            output_parameters = dict(output.get("parameters") or {})
            if output_parameters.pop("binary_data", False):
                binary.add(output["name"])
            _parameters_from_json(request.outputs.add(name=output["name"]).parameters, output_parameters)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"malformed tensor in the request: {exc!r}") from None
    if offset != len(body):
        raise InvalidInput(f"the body holds {len(body) - offset} bytes beyond the tensors its header describes")
    return request, binary


def infer_answer(response: pb.ModelInferResponse, binary: set) -> tuple[bytes, int | None]:
    """ModelInferResponse -> (body, JSON header length when any output is binary, else None)."""
    document: dict = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = parameters_to_json(response.parameters)
    outputs, raws = [], []
    for index, output in enumerate(response.outputs):
        raw = response.raw_output_contents[index]
        entry = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        parameters = parameters_to_json(output.parameters)
        if "*" in binary or output.name in binary:
            parameters["binary_data_size"] = len(raw)
            raws.append(raw)
        else:
            entry["data"] = json_data(decode_raw(raw, output.datatype, list(output.shape)), output.datatype)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    document["outputs"] = outputs
    head = json.dumps(document, separators=(",", ":")).encode()
    if not raws:
        return head, None
    return head + b"".join(raws), len(head)
