"""Write small model repositories for tests (Triton layout, synthetic backends)."""

from __future__ import annotations

from pathlib import Path

from tailmark.protos.codec import DATATYPES
from tailmark.server.default_repository import write_model

CONFIG_TYPE = {dt: "TYPE_STRING" if dt == "BYTES" else f"TYPE_{dt}" for dt in DATATYPES}


def identity_config(datatype: str = "FP32", dims: str = "[ -1 ]", max_batch_size: int = 0) -> str:
    t = CONFIG_TYPE[datatype]
    return f"""
backend: "identity"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: {t} dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: {t} dims: {dims} }} ]
"""


def sleep_config(mean_ms: float, *, distribution: str = "fixed", instances: int = 1, extra: str = "") -> str:
    return f"""
backend: "sleep"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
parameters {{ key: "distribution" value: {{ string_value: "{distribution}" }} }}
parameters {{ key: "mean_ms" value: {{ string_value: "{mean_ms}" }} }}
{extra}
"""


def llm_config(
    *,
    prefill_base_ms: float,
    prefill_per_token_ms: float,
    decode_base_ms: float,
    decode_per_sequence_ms: float,
    **parameters: float,
) -> str:
    """A synthetic LLM (server/generative/) with these timings, and any other of its parameters (stall_ms, ...)."""
    values = {
        "prefill_base_ms": prefill_base_ms, "prefill_per_input_token_ms": prefill_per_token_ms,
        "decode_base_ms": decode_base_ms, "decode_per_sequence_ms": decode_per_sequence_ms, **parameters,
    }  # fmt: skip
    lines = "\n".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v:g}" }} }}' for k, v in values.items())
    return f"""
backend: "synthetic_llm"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "text_output" data_type: TYPE_STRING dims: [ -1 ] }} ]
{lines}
"""


ERROR_CONFIG = """
backend: "error"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "message" value: { string_value: "deliberate failure for testing" } }
"""


def write_test_repository(root: Path) -> Path:
    """identity_<dtype> for every datatype, a batched identity, sleep, error, null, and two broken models."""
    for datatype in DATATYPES:
        write_model(root, f"identity_{datatype.lower()}", identity_config(datatype))
    write_model(root, "identity", identity_config("FP32"))
    write_model(root, "identity_batched", identity_config("FP32", "[ 4 ]", max_batch_size=8))
    write_model(
        root,
        "two_inputs",
        """
backend: "identity"
max_batch_size: 0
input [ { name: "A" data_type: TYPE_INT32 dims: [ 2, 2 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "A_OUT" data_type: TYPE_INT32 dims: [ 2, 2 ] }, { name: "B_OUT" data_type: TYPE_FP32 dims: [ 3 ] } ]
""",
    )
    write_model(root, "sleep", sleep_config(50, instances=2))
    write_model(root, "error", ERROR_CONFIG)
    write_model(
        root,
        "null",
        """
backend: "null"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
""",
    )
    broken = root / "broken_config"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text("name: 'broken_config'\nmax_batch_size: [oops\n")
    write_model(
        root, "missing_file", 'platform: "pytorch_libtorch"\n' + identity_config().replace('backend: "identity"', "")
    )
    return root


def batched_sleep_config(
    mean_ms: float, *, max_batch_size: int = 8, dynamic_batching: str = "", instances: int = 1, dims: str = "[ 2 ]"
) -> str:
    """A sleep model (fixed service time per execution, whatever the batch) with ``dynamic_batching { ... }``."""
    return f"""
backend: "sleep"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: {dims} }} ]
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
dynamic_batching {{ {dynamic_batching} }}
parameters {{ key: "distribution" value: {{ string_value: "fixed" }} }}
parameters {{ key: "mean_ms" value: {{ string_value: "{mean_ms}" }} }}
"""
