"""bench/server_gpu.py, the prepared GPU sweep, runs end to end here with --device cpu (a smoke run of the
script itself: the numbers are the CPU's; on a CUDA machine the same script measures the GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "server_gpu.py"


def test_the_sweep_measures_every_variant_backend_and_served(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install 'tailmark[onnx]')")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--batch-sizes", "1", "4", "--seconds", "0.2",
         "--concurrency", "2", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads((tmp_path / "server_gpu.json").read_text())
    seen = {(m["variant"], m["mode"], m["batch"]) for m in doc["measurements"]}
    for variant in ("resnet", "resnet_onnx", "resnet_graphs"):
        for mode in ("backend", "served"):
            assert {(variant, mode, 1), (variant, mode, 4)} <= seen, (variant, mode, sorted(seen))
    for m in doc["measurements"]:
        assert m["calls"] > 0 and m["samples_per_s"] > 0 and 0 < m["p50_ms"] <= m["p99_ms"]


def test_without_cuda_it_says_so_and_exits_zero(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU sweep would run for real")
    run = subprocess.run([sys.executable, str(SCRIPT), "--output", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0 and "no CUDA device here" in run.stdout
