"""``tailmark export``: the repositories it writes load in tailmark's server, and its usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tailmark.server.config import load_config

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install 'tailmark[onnx]')")


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tailmark", "export", *args], capture_output=True, text=True, timeout=300
    )


def test_export_writes_both_repositories_with_the_same_batching(tmp_path):
    out, triton = tmp_path / "tailmark", tmp_path / "triton"
    done = _export(
        "--output", str(out), "--triton-repo", str(triton), "--preferred-batch-size", "4", "--max-queue-delay-us", "700"
    )
    assert done.returncode == 0, done.stderr
    assert (out / "resnet" / "1" / "model.pt").is_file()
    assert (out / "resnet_onnx" / "1" / "model.onnx").is_file()
    assert (triton / "resnet" / "1" / "model.py").is_file()
    assert (triton / "resnet" / "1" / "model.onnx").read_bytes() == (
        out / "resnet_onnx" / "1" / "model.onnx"
    ).read_bytes()
    assert (triton / "identity" / "1" / "model.py").is_file()
    for path in (out / "resnet", out / "resnet_onnx", triton / "resnet", triton / "resnet_onnx"):
        config = load_config(path / "config.pbtxt", name=path.name)
        assert config.max_batch_size == 8
        assert list(config.dynamic_batching.preferred_batch_size) == [4]
        assert config.dynamic_batching.max_queue_delay_microseconds == 700
    assert load_config(triton / "resnet" / "config.pbtxt").backend == "python"
    assert load_config(triton / "resnet_onnx" / "config.pbtxt").platform == "onnxruntime_onnx"
    assert "no TensorRT plan" in done.stdout or (out / "resnet_trt" / "1" / "model.plan").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to do"),
        (("--output", "x", "--formats", "tflite"), "--formats tflite: unknown"),
        (("--output", "x", "--preferred-batch-size", "9"), "outside 1..8"),
    ],
)
def test_export_usage_errors_exit_2_with_one_line(args, message):
    done = _export(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
