"""KServe-v2 REST pieces shared by the client's HTTP transport and the server's HTTP frontend.

Parameter maps (protobuf ``InferParameter`` <-> JSON values), nested JSON ``data`` flattened, and a decoded
tensor as JSON ``data``. Each side keeps its own policy around them: the server refuses what the client
would coerce.
"""

from __future__ import annotations

import numpy as np


class ParameterError(TypeError):
    """A JSON parameter's value is not a bool, number or string."""


def parameters_to_json(parameters) -> dict:
    """A protobuf parameter map -> {key: the value of whichever choice is set}; unset entries left out."""
    out = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def parameters_from_json(target, values: dict, *, coerce: bool = False) -> None:
    """Set ``values`` into the protobuf parameter map ``target``.

    A value that is not a bool, number or string is stored as its ``str()`` when ``coerce``; otherwise it
    raises ParameterError."""
    for key, value in values.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        elif isinstance(value, str) or coerce:
            target[key].string_param = str(value)
        else:
            raise ParameterError(f"parameter {key!r} must be a bool, number or string")


def flatten(data) -> list:
    """Nested JSON lists -> one flat list in row-major order (a scalar -> [scalar])."""
    if not isinstance(data, list):
        return [data]
    out: list = []
    for item in data:
        out.extend(flatten(item))
    return out


def json_data(array: np.ndarray, datatype: str, *, bytes_errors: str = "replace") -> list:
    """A decoded tensor -> its flat JSON ``data``: BYTES as text (undecodable bytes by ``bytes_errors``),
    FP16/BF16 as float32 values."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [item.decode("utf-8", errors=bytes_errors) for item in flat]
    if datatype in ("FP16", "BF16"):
        return flat.astype(np.float32).tolist()
    return flat.tolist()
