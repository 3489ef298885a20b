"""KServe-v2 REST bodies <-> the protobuf messages the client's hot path carries (``--transport http``).

``rest_request`` turns a serialised ModelInferRequest into its REST form once per distinct payload: Triton's
binary tensor extension (a JSON header whose inputs carry ``binary_data_size``, the raw tensors after it, all
outputs asked for in binary) or JSON tensors. ``ResponseConverter`` turns an answer back into a serialised
ModelInferResponse: the protobuf part before the raw outputs is built once per distinct JSON header, and the
binary outputs are appended as ``raw_output_contents`` fields, so the response check sees the same bytes a
gRPC endpoint would send.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np

from tailmark.client.request_template import varint
from tailmark.protos import inference_pb2 as pb
from tailmark.protos.codec import decode_raw, decode_typed, encode_raw, numpy_dtype
from tailmark.protos.rest_codec import flatten, json_data, parameters_from_json, parameters_to_json

HEADERS_CACHED = 256  # distinct response JSON headers whose protobuf prefix is kept
_RESPONSE_RAW_TAG = b"\x32"  # ModelInferResponse.raw_output_contents: field 6, length-delimited


def _raw_from_json(data, datatype: str) -> bytes:
    if datatype == "BYTES":
        items = np.empty(len(data), dtype=object)
        items[:] = [str(item).encode() if not isinstance(item, bytes) else item for item in flatten(data)]
        return encode_raw(items)
    return encode_raw(np.asarray(data, dtype=numpy_dtype(datatype)).reshape(-1))


def rest_request(payload: bytes, *, json_tensors: bool) -> tuple[str, bytes, int | None]:
    """A serialised ModelInferRequest -> (path, body, JSON header length or None when all JSON)."""
    request = pb.ModelInferRequest.FromString(payload)
    path = f"/v2/models/{quote(request.model_name, safe='')}"
    if request.model_version:
        path += f"/versions/{quote(request.model_version, safe='')}"
    path += "/infer"
    header: dict = {}
    if request.id:
        header["id"] = request.id
    parameters = parameters_to_json(request.parameters)
    raws: list[bytes] = []
    inputs = []
    for index, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if index < len(request.raw_input_contents):
            raw = request.raw_input_contents[index]
        else:
            raw = encode_raw(decode_typed(tensor.contents, tensor.datatype, shape))
        entry = {"name": tensor.name, "shape": shape, "datatype": tensor.datatype}
        tensor_parameters = parameters_to_json(tensor.parameters)
        if json_tensors:
            entry["data"] = json_data(
                decode_raw(raw, tensor.datatype, shape), tensor.datatype, bytes_errors="surrogateescape"
            )
        else:
            tensor_parameters["binary_data_size"] = len(raw)
            raws.append(raw)
        if tensor_parameters:
            entry["parameters"] = tensor_parameters
        inputs.append(entry)
    header["inputs"] = inputs
    if request.outputs:
        outputs = []
        for output in request.outputs:
            output_parameters = parameters_to_json(output.parameters)
            if not json_tensors:
                output_parameters["binary_data"] = True
            outputs.append({"name": output.name, **({"parameters": output_parameters} if output_parameters else {})})
        header["outputs"] = outputs
    elif not json_tensors:
        parameters["binary_data_output"] = True
    if parameters:
        header["parameters"] = parameters
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if json_tensors:
        return path, encoded, None
    return path, encoded + b"".join(raws), len(encoded)


class ResponseConverter:
    """REST answers -> serialised ModelInferResponse; the protobuf part before the raw outputs is built once
    per distinct JSON header (bounded)."""

    def __init__(self) -> None:
        self._prefixes: dict[bytes, tuple[bytes, tuple[int, ...]] | None] = {}

    def __call__(self, body: bytes, header_length: int | None) -> bytes:
        head = body if header_length is None else body[:header_length]
        cached = self._prefixes.get(head)
        if cached is None:
            cached = self._build(head)
        if cached is False:  # JSON data in outputs: converted in full each time
            return self._convert(head, body, header_length)
        prefix, sizes = cached
        parts = [prefix]
        offset = header_length or 0
        for size in sizes:
            parts += (_RESPONSE_RAW_TAG, varint(size), body[offset : offset + size])
            offset += size
        if offset != len(body):
            raise ValueError(f"binary outputs hold {offset - (header_length or 0)} bytes, the body has more")
        return b"".join(parts)

    def _build(self, head: bytes):
        message, sizes = self._message(json.loads(head))
        if len(self._prefixes) >= HEADERS_CACHED:
            self._prefixes.pop(next(iter(self._prefixes)))
        entry = (message.SerializeToString(), tuple(sizes)) if sizes is not None else False
        self._prefixes[bytes(head)] = entry
        return entry

    @staticmethod
    def _message(document: dict) -> tuple[pb.ModelInferResponse, list[int] | None]:
        message = pb.ModelInferResponse(
            model_name=document.get("model_name", ""),
            model_version=str(document.get("model_version", "") or ""),
            id=str(document.get("id", "") or ""),
        )
        parameters_from_json(message.parameters, document.get("parameters") or {}, coerce=True)
        sizes: list[int] | None = []
        for output in document.get("outputs", []):
            tensor = message.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
            parameters = dict(output.get("parameters") or {})
            size = parameters.pop("binary_data_size", None)
            parameters_from_json(tensor.parameters, parameters, coerce=True)
            if size is None:
                sizes = None
            elif sizes is not None:
                sizes.append(int(size))
        return message, sizes

    def _convert(self, head: bytes, body: bytes, header_length: int | None) -> bytes:
        document = json.loads(head)
        message, _ = self._message(document)
        offset = header_length or 0
        for output in document.get("outputs", []):
            size = (output.get("parameters") or {}).get("binary_data_size")
            if size is None:
                message.raw_output_contents.append(_raw_from_json(output.get("data", []), output["datatype"]))
            else:
                message.raw_output_contents.append(body[offset : offset + int(size)])
                offset += int(size)
        return message.SerializeToString()
