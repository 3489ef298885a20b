"""Train → serve: a model trained by ``tailmark train`` is exported with ``--export-to``, served by a real
``tailmark serve`` process, and scored over gRPC with tritonclient (the client has no accuracy mode yet)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from support.serve import ServerProcess
from tailmark.models.fashion_cnn import FashionCNN
from tailmark.training.workloads.smoke import digits_file, load_split
from tailmark.training.workloads.vision import PIXEL_MEAN, PIXEL_STD


def served_logits(target: str, model: str, images: np.ndarray, max_batch: int = 8) -> np.ndarray:
    """The served model's logits for ``images`` (N, C, H, W), sent in requests of up to ``max_batch`` images."""
    parts = []
    with grpcclient.InferenceServerClient(target) as client:
        for start in range(0, len(images), max_batch):
            batch = np.ascontiguousarray(images[start : start + max_batch], dtype=np.float32)
            tensor = grpcclient.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            parts.append(client.infer(model, [tensor]).as_numpy("logits"))
    return np.concatenate(parts)


def test_trained_smoke_model_served_reproduces_the_eval_accuracy(cli, tmp_path):
    done = cli(
        "train", "smoke", "--runs", "1", "--threads", "1", "--quiet", "--output", "out", "--export-to", "repo",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "served model: repo/digits_cnn (run 0," in done.stdout
    result = json.loads((tmp_path / "out" / "digits_cnn.json").read_text())
    run, served = result["runs"][0], result["served"]
    assert run["status"] == "success" and run["accuracy"] >= 0.98
    assert served == {
        "repository": "repo",
        "name": "digits_cnn",
        "weights": run["model"],
        "run_index": 0,
        "accuracy": run["accuracy"],
    }
    assert (tmp_path / "repo" / "digits_cnn" / "1" / "model.pt").is_file()

    _, _, x_eval, y_eval = load_split(digits_file())  # the eval set the harness scored, pixels in [0, 1]
    with ServerProcess(tmp_path / "repo") as server:
        logits = served_logits(server.target, "digits_cnn", x_eval.numpy())
    served_top1 = float((logits.argmax(axis=1) == y_eval.numpy()).mean())
    assert served_top1 == pytest.approx(run["accuracy"], abs=0.01)
    assert served_top1 >= 0.97


def test_vision_export_takes_raw_pixels_and_normalises_inside(cli, tmp_path):
    torch.manual_seed(7)
    model = FashionCNN().eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics, as training would
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    done = cli("train", "vision", "--from-weights", "weights.pt", "--export-to", "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "exported weights.pt to repo/fashion_cnn" in done.stdout

    pixels = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # as a client holds an image
    with torch.no_grad():
        expected = model((pixels - PIXEL_MEAN) / PIXEL_STD).numpy()
    with ServerProcess(tmp_path / "repo") as server:
        got = served_logits(server.target, "fashion_cnn", pixels.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_export_errors_are_one_line(cli, tmp_path):
    torch.save(FashionCNN().state_dict(), tmp_path / "fashion.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for args, expected in [
        (("translation", "--export-to", "repo"), "the translation workload's model cannot be served yet"),
        (("smoke", "--from-weights", "fashion.pt"), "give the repository with --export-to REPO"),
        (("smoke", "--from-weights", "nope.pt", "--export-to", "repo"), "nope.pt: no such file"),
        (("smoke", "--from-weights", "junk.pt", "--export-to", "repo"), "junk.pt: not a state_dict torch can load"),
        (("smoke", "--from-weights", "fashion.pt", "--export-to", "repo"), "does not fit the smoke model"),
    ]:
        done = cli("train", *args, cwd=tmp_path)
        assert done.returncode == 2, done.stdout
        assert expected in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "repo").exists()


@pytest.mark.skipif(
    "TAILMARK_VISION_RESULT" not in os.environ,
    reason="set TAILMARK_VISION_RESULT=DIR/fashion_cnn.json of a `tailmark train vision` set (minutes to train)",
)
def test_trained_vision_model_served_reproduces_the_eval_accuracy(cli, tmp_path):
    """The issue's check on the real thing: the first converged run of a vision set, served, scored on all 10,000
    test images as a client holds them (pixels / 255), equals the harness's eval accuracy within 1 %."""
    from tailmark.training.workloads.vision import DEFAULT_DIR, read_idx

    result = json.loads(Path(os.environ["TAILMARK_VISION_RESULT"]).read_text())
    run = next(r for r in result["runs"] if r["status"] == "success")
    weights = Path(run["model"]).resolve()  # relative to where the set ran, like the JSON's other paths
    done = cli("train", "vision", "--from-weights", str(weights), "--export-to", "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    images = read_idx(DEFAULT_DIR / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    labels = read_idx(DEFAULT_DIR / "t10k-labels-idx1-ubyte.gz")
    with ServerProcess(tmp_path / "repo") as server:
        logits = served_logits(server.target, "fashion_cnn", images)
    served_top1 = float((logits.argmax(axis=1) == labels).mean())
    assert served_top1 == pytest.approx(run["accuracy"], abs=0.01) and served_top1 >= 0.89
