"""``tailmark accuracy``: every sample once, top-1 against labels; and train → serve → accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support.runcli import tailmark
from support.serve import ServerProcess


def test_top1_against_known_answers(server, tmp_path):
    # identity_batched echoes (N, 4): sample i's largest element is at i % 4
    samples = np.zeros((20, 4), np.float32)
    samples[np.arange(20), np.arange(20) % 4] = 1.0
    labels = np.arange(20) % 4
    labels[:5] = (labels[:5] + 1) % 4  # five wrong labels: 0.75
    np.save(tmp_path / "x.npy", samples)
    np.save(tmp_path / "y.npy", labels)
    run = tailmark(
        "accuracy", "--target", server.target, "--model", "identity_batched", "--input-data", str(tmp_path / "x.npy"),
        "--labels", str(tmp_path / "y.npy"), "--batch-size", "3", "--out", str(tmp_path / "acc.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "top-1 0.7500 (15/20)" in run.stdout
    assert json.loads((tmp_path / "acc.json").read_text())["correct"] == 15
    strict = tailmark(
        "accuracy", "--target", server.target, "--model", "identity_batched", "--input-data", str(tmp_path / "x.npy"),
        "--labels", str(tmp_path / "y.npy"), "--min-top1", "0.9",
    )  # fmt: skip
    assert strict.returncode == 3
    np.save(tmp_path / "short.npy", labels[:10])
    bad = tailmark(
        "accuracy", "--target", server.target, "--model", "identity_batched", "--input-data", str(tmp_path / "x.npy"),
        "--labels", str(tmp_path / "short.npy"),
    )  # fmt: skip
    assert bad.returncode == 2 and "10 labels for 20 samples" in bad.stderr


def test_trained_model_served_reproduces_its_eval_accuracy(tmp_path):
    """Train the smoke workload, export it, serve it, and measure it with the client's accuracy mode."""
    pytest.importorskip("sklearn")
    from tailmark.training.workloads.smoke import digits_file, load_split

    trained = tailmark(
        "train", "smoke", "--runs", "1", "--threads", "1", "--quiet", "--output", str(tmp_path / "out"),
        "--export-to", str(tmp_path / "repo"), timeout_s=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    harness = json.loads((tmp_path / "out" / "digits_cnn.json").read_text())["served"]["accuracy"]
    _, _, x_eval, y_eval = load_split(digits_file())  # the eval set the harness scored
    np.savez(tmp_path / "eval.npz", input=x_eval.numpy().astype(np.float32))
    np.save(tmp_path / "labels.npy", y_eval.numpy())
    with ServerProcess(tmp_path / "repo") as server:
        run = tailmark(
            "accuracy", "--target", server.target, "--model", "digits_cnn", "--input-data",
            str(tmp_path / "eval.npz"), "--labels", str(tmp_path / "labels.npy"), "--out", str(tmp_path / "acc.json"),
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    served = json.loads((tmp_path / "acc.json").read_text())
    assert served["samples"] == len(y_eval)
    assert served["top1"] == pytest.approx(harness, abs=0.01)


def test_a_model_without_output_metadata_needs_output(tmp_path):
    """Issue 10 item 8: metadata that lists no outputs (legal; KServe-style endpoints do it) crashed with an
    IndexError on ``info.outputs[0]``; now ``--output`` is asked for in one line, and given, it works."""
    from support.kserve_like import KServeLike

    samples = np.zeros((8, 4), np.float32)  # echo answers each sample itself: top-1 is the index of its 1
    samples[np.arange(8), np.arange(8) % 4] = 1.0
    np.save(tmp_path / "x.npy", samples)
    np.save(tmp_path / "y.npy", np.arange(8) % 4)
    args = ("accuracy", "--model", "echo", "--input-data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"))
    with KServeLike(outputs=False) as endpoint:
        refused = tailmark(*args, "--target", endpoint.target)
        assert endpoint.calls == 0
        given = tailmark(*args, "--target", endpoint.target, "--output", "OUTPUT0")
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "lists no outputs" in refused.stderr and "--output" in refused.stderr
    assert given.returncode == 0, given.stderr
    assert "top-1 1.0000 (8/8)" in given.stdout
