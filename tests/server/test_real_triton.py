"""The exported python-backend repository under the real ``tritonserver`` (from the nvidia-pytriton wheel,
on CPU), driven with tritonclient (its answers equal tailmark's server's for the same inputs) and with the
tailmark client itself (`tailmark run`: a VALID, complete results.json with no errors).

Triton runs from its own cached venv (numpy < 2; see deploy/triton/launch.py). The first run builds it
(about 40 s, from PyPI); where that cannot be done, the tests skip and say why.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.deploy.triton.launch import TritonProcess, TritonUnavailable, ensure_venv
from tailmark.deploy.triton.repository import write_triton_repository
from tailmark.models.export import Batching


@pytest.fixture(scope="module")
def triton(exported_repository, tmp_path_factory):
    try:
        ensure_venv()
    except TritonUnavailable as exc:
        pytest.skip(f"real Triton unavailable: {exc}")
    root = tmp_path_factory.mktemp("triton")
    batching = Batching(max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_us=2000)
    onnx_path = exported_repository / "resnet_onnx" / "1" / "model.onnx"
    write_triton_repository(root / "repo", "resnet", batching, onnx_path, backends=("python",))
    with TritonProcess(root / "repo", log_path=root / "tritonserver.log") as process:
        yield process


@pytest.fixture(scope="module")
def tailmark_server(exported_repository):
    with ServerProcess(exported_repository) as process:
        yield process


def _infer(target: str, model: str, name: str, output: str, array: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(target) as client:
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        return client.infer(model, [tensor]).as_numpy(output)


def test_triton_serves_the_exported_repository_with_its_batching(triton):
    with grpcclient.InferenceServerClient(triton.target) as client:
        assert client.is_model_ready("identity") and client.is_model_ready("resnet")
        config = client.get_model_config("resnet", as_json=True)["config"]
    assert config["backend"] == "python"
    assert int(config["max_batch_size"]) == 8
    assert [int(s) for s in config["dynamic_batching"]["preferred_batch_size"]] == [4]


def test_identity_answers_equal(triton, tailmark_server):
    data = np.linspace(-3, 3, 16, dtype=np.float32)
    theirs = _infer(triton.target, "identity", "INPUT0", "OUTPUT0", data)
    ours = _infer(tailmark_server.target, "identity", "INPUT0", "OUTPUT0", data)
    assert theirs.shape == (16,)  # numpy >= 2 in the stub would leave it empty
    np.testing.assert_array_equal(theirs, ours)
    np.testing.assert_array_equal(theirs, data)


@pytest.mark.parametrize("ours_model", ["resnet_onnx", "resnet"])
def test_resnet_logits_equal(triton, tailmark_server, ours_model):
    images = np.random.default_rng(7).standard_normal((3, 3, 32, 32), dtype=np.float32)
    theirs = _infer(triton.target, "resnet", "input", "logits", images)
    ours = _infer(tailmark_server.target, ours_model, "input", "logits", images)
    assert theirs.shape == (3, 10)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def test_concurrent_requests_are_batched_by_triton_and_routed(triton):
    images = np.random.default_rng(8).standard_normal((8, 3, 32, 32), dtype=np.float32)
    alone = [_infer(triton.target, "resnet", "input", "logits", images[i : i + 1]) for i in range(8)]
    together: list = [None] * 8
    threads = [
        threading.Thread(
            target=lambda i=i: together.__setitem__(
                i, _infer(triton.target, "resnet", "input", "logits", images[i : i + 1])
            )
        )
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i in range(8):
        np.testing.assert_allclose(together[i], alone[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transport", ["grpc", "h2"])
def test_the_tailmark_client_drives_real_triton(triton, tmp_path, transport):
    """``tailmark run`` against the real tritonserver, as a user would run it: a VALID, complete result
    over grpc.aio and over tailmark's own HTTP/2 transport (Triton's C++ gRPC frontend as the peer)."""
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", triton.target, "--model", "identity", "--scenario", "single-stream",
        "--shape", "INPUT0:16", "--duration", "1", "--warmup", "0.2", "--min-queries", "50",
        "--out", str(out), "--no-progress", "--transport", transport, timeout_s=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    assert doc["complete"] is True and doc["interrupted"] is None
    everything = scenario(doc, "single-stream")["classes"]["all"]
    assert everything["error_count"] == 0, everything["errors"]
    assert everything["ok_count"] >= 50
    assert everything["verdict"]["result"] == "VALID", everything["verdict"]
