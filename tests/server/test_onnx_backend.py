"""ONNX Runtime backend: exported ResNet served by a real process, checked against torch; bad configs."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from support.serve import ServerProcess
from tailmark.protos import model_config_pb2 as mc
from tailmark.server.backends.onnx_backend import providers_for
from tailmark.server.config import parse_config

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install 'tailmark[onnx]')")


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32), dtype=np.float32)


def _infer(client, model: str, images: np.ndarray) -> np.ndarray:
    tensor = grpcclient.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return client.infer(model, [tensor]).as_numpy("logits")


@pytest.fixture(scope="module")
def repository(exported_repository, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    shutil.copytree(exported_repository / "resnet_onnx", root / "resnet_onnx")
    config = (root / "resnet_onnx" / "config.pbtxt").read_text()
    for name, change in {
        "wrong_shape": ("dims: [ 3, 32, 32 ]", "dims: [ 3, 16, 16 ]"),
        "wrong_name": ('name: "input"', 'name: "image"'),
        "wrong_type": ("TYPE_FP32", "TYPE_FP16"),
    }.items():
        (root / name / "1").mkdir(parents=True)
        shutil.copyfile(root / "resnet_onnx" / "1" / "model.onnx", root / name / "1" / "model.onnx")
        text = config.replace('name: "resnet_onnx"', f'name: "{name}"').replace(*change)
        (root / name / "config.pbtxt").write_text(text)
    (root / "missing_onnx" / "1").mkdir(parents=True)
    (root / "missing_onnx" / "config.pbtxt").write_text(config.replace('name: "resnet_onnx"', 'name: "missing_onnx"'))
    return root


@pytest.fixture(scope="module")
def server(repository):
    with ServerProcess(repository) as process:
        yield process


def test_onnx_outputs_match_the_torch_model(server):
    import torch

    from tailmark.models import resnet

    images = _images(5)
    with grpcclient.InferenceServerClient(server.target) as client:
        served = _infer(client, "resnet_onnx", images)
    with torch.inference_mode():
        expected = resnet.build(seed=0)(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


def test_concurrent_onnx_requests_are_batched_and_routed(server):
    images = _images(12, seed=1)
    with grpcclient.InferenceServerClient(server.target) as client:
        before = client.get_inference_statistics("resnet_onnx", as_json=True)["model_stats"][0]
        alone = [_infer(client, "resnet_onnx", images[i : i + 1]) for i in range(12)]
        together: list = [None] * 12

        def one(i: int) -> None:
            together[i] = _infer(client, "resnet_onnx", images[i : i + 1])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stats = client.get_inference_statistics("resnet_onnx", as_json=True)["model_stats"][0]
    for i in range(12):
        np.testing.assert_allclose(together[i], alone[i], rtol=1e-5, atol=1e-6)
    assert int(stats["inference_count"]) - int(before.get("inference_count", 0)) == 24
    assert int(stats["execution_count"]) - int(before.get("execution_count", 0)) < 24
    assert max(int(b["batch_size"]) for b in stats["batch_stats"]) > 1


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("wrong_shape", "has shape [-1, 3, 16, 16] in config.pbtxt"),
        ("wrong_name", "input 'image' is not in the graph"),
        ("wrong_type", "is FP16 in config.pbtxt"),
        ("missing_onnx", "no model file model.onnx"),
    ],
)
def test_a_config_that_does_not_match_the_graph_makes_only_that_model_unavailable(server, model, reason):
    with grpcclient.InferenceServerClient(server.target) as client:
        index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        assert index[model]["state"] == "UNAVAILABLE"
        assert reason in index[model]["reason"]
        assert client.is_model_ready("resnet_onnx")
    assert any(model in line and "UNAVAILABLE" in line for line in server.lines)


def test_cuda_provider_only_when_asked_for_and_present():
    def config(kind: str) -> mc.ModelConfig:
        return parse_config(
            f'name: "m" platform: "onnxruntime_onnx" max_batch_size: 0 instance_group [ {{ kind: {kind} }} ] '
            'input [ { name: "I" data_type: TYPE_FP32 dims: [ 1 ] } ] '
            'output [ { name: "O" data_type: TYPE_FP32 dims: [ 1 ] } ]'
        )

    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for(config("KIND_GPU"), both) == both
    assert providers_for(config("KIND_AUTO"), both) == both
    assert providers_for(config("KIND_CPU"), both) == ["CPUExecutionProvider"]
    assert providers_for(config("KIND_GPU"), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
