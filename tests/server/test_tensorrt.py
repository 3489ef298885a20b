"""TensorRT backend: the parts that need no TensorRT (profiles, binding plans, the refusal where it is
missing) always; building and running a real engine only where TensorRT and CUDA exist."""

from __future__ import annotations

import numpy as np
import pytest

from tailmark.models.export import profile_shapes as export_profile_shapes
from tailmark.models.export import tensorrt_available
from tailmark.server.backends.tensorrt_backend import EngineTensor, binding_plan, profile_shapes
from tailmark.server.config import ConfigError, parse_config

CONFIG = """
name: "m" platform: "tensorrt_plan" max_batch_size: 16
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
"""


def test_profile_covers_batch_one_to_max_with_opt_at_the_largest_preferred_size():
    config = parse_config(CONFIG + "dynamic_batching { preferred_batch_size: [ 4, 8 ] }")
    assert profile_shapes(config) == {"input": ((1, 3, 32, 32), (8, 3, 32, 32), (16, 3, 32, 32))}
    assert profile_shapes(parse_config(CONFIG))["input"][1] == (16, 3, 32, 32)


def test_profile_of_an_unbatched_model_is_its_fixed_shape():
    assert export_profile_shapes({"x": (2, 5)}, 0) == {"x": ((2, 5), (2, 5), (2, 5))}


def test_profile_refuses_variable_non_batch_dims():
    with pytest.raises(ConfigError, match="fixed non-batch dims"):
        profile_shapes(parse_config(CONFIG.replace("dims: [ 3, 32, 32 ]", "dims: [ 3, -1, -1 ]")))


def engine(**changes) -> list[EngineTensor]:
    tensors = {
        "input": EngineTensor("input", True, "FLOAT", (-1, 3, 32, 32)),
        "logits": EngineTensor("logits", False, "FLOAT", (-1, 10)),
    }
    tensors.update(changes)
    return [t for t in tensors.values() if t is not None]


def test_binding_plan_matches_config_to_engine():
    plan = binding_plan(parse_config(CONFIG), engine())
    assert [(b.name, b.datatype, b.torch_dtype) for b in plan.inputs] == [("input", "FP32", "float32")]
    assert [(b.name, b.datatype, b.torch_dtype) for b in plan.outputs] == [("logits", "FP32", "float32")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input": None}, "no input 'input'"),
        ({"logits": EngineTensor("logits", True, "FLOAT", (-1, 10))}, "no output 'logits'"),
        ({"input": EngineTensor("input", True, "HALF", (-1, 3, 32, 32))}, "FP32 in config.pbtxt, HALF"),
        ({"input": EngineTensor("input", True, "FLOAT", (-1, 3, 16, 16))}, r"\[-1, 3, 16, 16\] in the engine"),
        ({"mask": EngineTensor("mask", True, "INT32", (-1, 4))}, r"engine inputs \['mask'\]"),
    ],
)
def test_binding_plan_refuses_a_mismatched_engine(changes, message):
    with pytest.raises(ConfigError, match=message):
        binding_plan(parse_config(CONFIG), engine(**changes))


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed: the missing-TensorRT path cannot be shown")
def test_a_tensorrt_model_without_tensorrt_is_unavailable_with_the_reason(tmp_path):
    from tailmark.server.repository import Repository

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.plan").write_bytes(b"not a plan")
    (tmp_path / "m" / "config.pbtxt").write_text(CONFIG)
    repository = Repository(tmp_path)
    repository.load_all()
    reason = repository.models["m"].reason
    assert "TensorRT is not installed" in reason or "need a CUDA device" in reason


@pytest.mark.skipif(not tensorrt_available(), reason="needs TensorRT and a CUDA device (TensorRT has no PyPI wheels)")
def test_a_built_engine_serves_the_same_logits_as_torch(tmp_path):
    import torch

    from tailmark.models import resnet
    from tailmark.models.export import Batching, export_reference
    from tailmark.server.repository import Repository

    export_reference("resnet", tmp_path, Batching(max_batch_size=8), formats=("onnx", "tensorrt"))
    repository = Repository(tmp_path)
    repository.load_all()
    model = repository.get("resnet_trt")
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32), dtype=np.float32)
    logits = model.backend.execute({"input": images})["logits"]
    with torch.inference_mode():
        expected = resnet.build(seed=0)(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-2, atol=1e-3)
    repository.close()
