"""Our messages and tritonclient's are byte-identical both ways, and both live in one process."""

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.unknown_fields import UnknownFieldSet
from tritonclient.grpc import model_config_pb2 as triton_mc
from tritonclient.grpc import service_pb2 as triton

from tailmark.protos import model_config_pb2 as ours_mc
from tailmark.protos.service import RPCS

ROOT = Path(__file__).resolve().parents[2]


def filled(cls):
    """A message with every field set (recursively), so no field number can hide."""
    message = cls()
    _fill(message, depth=0)
    return message


def _fill(message, depth):
    for field in message.DESCRIPTOR.fields:
        if field.containing_oneof is not None and message.WhichOneof(field.containing_oneof.name):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            key = _scalar(key_field, 1)
            if value_field.message_type is not None:
                if depth < 3:
                    _fill(getattr(message, field.name)[key], depth + 1)
            else:
                getattr(message, field.name)[key] = _scalar(value_field, 2)
        elif field.message_type is not None:
            if depth >= 3:
                continue
            if field.is_repeated:
                _fill(getattr(message, field.name).add(), depth + 1)
            else:
                _fill(getattr(message, field.name), depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend([_scalar(field, 1), _scalar(field, 2)])
        else:
            setattr(message, field.name, _scalar(field, 3))


def _scalar(field, seed):
    from google.protobuf.descriptor import FieldDescriptor as F

    if field.type == F.TYPE_STRING:
        return f"s{field.number}-{seed}"
    if field.type == F.TYPE_BYTES:
        return bytes([field.number, seed])
    if field.type == F.TYPE_BOOL:
        return True
    if field.type == F.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return seed + 0.5
    return field.number * 10 + seed


PAIRS = [(rpc.request.DESCRIPTOR.name, rpc.request) for rpc in RPCS.values()]
PAIRS += [(rpc.response.DESCRIPTOR.name, rpc.response) for rpc in RPCS.values()]
PAIRS = sorted(set(PAIRS), key=lambda p: p[0])


@pytest.mark.parametrize(("name", "ours_cls"), PAIRS, ids=[p[0] for p in PAIRS])
def test_ours_to_tritonclient_and_back_is_byte_identical(name, ours_cls):
    theirs_cls = getattr(triton, name)
    message = filled(ours_cls)
    wire = message.SerializeToString(deterministic=True)
    parsed = theirs_cls.FromString(wire)
    assert len(UnknownFieldSet(parsed)) == 0  # every field we send is one tritonclient knows
    assert parsed.SerializeToString(deterministic=True) == wire
    assert ours_cls.FromString(parsed.SerializeToString(deterministic=True)) == message


@pytest.mark.parametrize(("name", "ours_cls"), PAIRS, ids=[p[0] for p in PAIRS])
def test_tritonclient_to_ours_keeps_every_field_we_define(name, ours_cls):
    theirs = getattr(triton, name)
    message = filled(theirs)
    wire = message.SerializeToString(deterministic=True)
    ours_msg = ours_cls.FromString(wire)
    # every field both define survives the trip with the same number and value
    back = theirs.FromString(ours_msg.SerializeToString(deterministic=True))
    for field in ours_cls.DESCRIPTOR.fields:
        assert theirs.DESCRIPTOR.fields_by_number[field.number].name == field.name
        assert getattr(back, field.name) == getattr(message, field.name), field.name


def test_model_config_fields_match_triton_numbers():
    def walk(ours_desc, theirs_desc):
        for field in ours_desc.fields:
            theirs_field = theirs_desc.fields_by_number.get(field.number)
            assert theirs_field is not None and theirs_field.name == field.name, (ours_desc.name, field.name)
            if field.message_type is not None and not field.message_type.GetOptions().map_entry:
                walk(field.message_type, theirs_field.message_type)

    walk(ours_mc.ModelConfig.DESCRIPTOR, triton_mc.ModelConfig.DESCRIPTOR)


def test_model_config_parses_identically_from_text():
    text = """
name: "m" platform: "pytorch_libtorch" max_batch_size: 8
input [ { name: "x" data_type: TYPE_BF16 format: FORMAT_NCHW dims: [ 3, -1 ] } ]
output [ { name: "y" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_GPU count: 2 gpus: [ 0, 1 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: DELAY max_queue_size: 64 } priority_levels: 2 }
parameters { key: "k" value: { string_value: "v" } }
"""
    ours_cfg = text_format.Parse(text, ours_mc.ModelConfig())
    theirs_cfg = text_format.Parse(text, triton_mc.ModelConfig())
    assert ours_cfg.SerializeToString(deterministic=True) == theirs_cfg.SerializeToString(deterministic=True)


def test_both_message_sets_coexist_in_one_process():
    imports = ["import tritonclient.grpc", "import tailmark.protos.inference_pb2, tailmark.server.core"]
    check = (
        "from google.protobuf import descriptor_pool as p; d = p.Default();"
        "assert d.FindMessageTypeByName('inference.ModelInferRequest');"
        "assert d.FindMessageTypeByName('tailmark.v2.ModelInferRequest'); print('ok')"
    )
    for order in (imports, imports[::-1]):  # either may be imported first
        code = "; ".join([*order, check])
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ok"


def test_generated_modules_are_current():
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
