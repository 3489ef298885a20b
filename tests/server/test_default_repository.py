"""The default repository of ``tailmark serve`` on the client-only install (no torch): the synthetic models
(the LLM included) serve, ``resnet`` is UNAVAILABLE saying torch is needed, and installing torch later builds a
fresh folder.

"No torch" is simulated in a real server process by ``sys.modules["torch"] = None``: ``import torch`` then
raises ModuleNotFoundError and ``importlib.util.find_spec("torch")`` answers None, as without the package.
(The real check, a venv from ``pip install .``, is in the commit that added this file.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from support.runcli import results, scenario, tailmark
from tailmark.protos import inference_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; from tailmark.cli import main; sys.exit(main())"


def _python(code: str, *args: str, cache: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True, **kwargs)


def _infer(target: str, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return call(request, timeout=30)


@pytest.fixture
def server_without_torch(tmp_path):
    """(target, output lines so far, cache folder) of ``tailmark serve --port 0`` with torch not importable."""
    cache = tmp_path / "cache"
    process = _python(
        WITHOUT_TORCH, "serve", "--port", "0", cache=cache, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if "listening on" in line:
                break
        else:
            pytest.fail("the server exited before listening:\n" + "\n".join(lines))
        target = lines[-1].split("listening on ", 1)[1].split()[0]
        yield target, lines, cache
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_synthetic_models_serve_and_resnet_says_torch_is_needed(server_without_torch, tmp_path):
    target, lines, cache = server_without_torch
    assert "(4/6 models ready)" in lines[-1]  # identity, null, sleep, synth-llm; not resnet, not tiny-lm
    assert not any("Traceback" in line for line in lines)
    [reason] = [line for line in lines if "model resnet is UNAVAILABLE" in line]
    assert "the PyTorch backend needs torch" in reason and "pip install 'tailmark[torch]'" in reason
    [reason] = [line for line in lines if "model tiny-lm is UNAVAILABLE" in line]
    assert "the tiny_lm backend needs torch" in reason and "pip install 'tailmark[torch]'" in reason

    # the full client measures the synthetic model
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", target, "--model", "identity", "--scenario", "server", "--target-qps", "50",
        "--duration", "1", "--warmup", "0.2", "--shape", "INPUT0:16", "--no-progress", "--out", str(out),
        "--no-calibration",
    )  # fmt: skip
    assert run.returncode in (0, 3), run.stderr  # 3: INVALID (too short to be valid), still measured
    entry = scenario(results(out), "server")["classes"]["all"]
    assert entry["query_count"] > 0 and entry["error_count"] == 0

    # a request for the ResNet is refused with the same reason
    request = pb.ModelInferRequest(model_name="resnet")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
    request.raw_input_contents.append(np.zeros((1, 3, 32, 32), np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as info:
        _infer(target, request)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "needs torch" in info.value.details()

    [folder] = (cache / "tailmark").iterdir()
    assert folder.name.endswith("-no-torch")
    assert not (folder / "resnet" / "1" / "model.pt").exists()


def test_installing_torch_later_builds_a_fresh_folder(tmp_path):
    """The folder built without torch is never taken for the full one (which must hold the ResNet)."""
    pytest.importorskip("torch")
    cache = tmp_path / "cache"
    code = "from tailmark.server.default_repository import ensure_default_repository as e; print(e())"
    without = _python(WITHOUT_TORCH.replace("from tailmark.cli import main; sys.exit(main())", code), cache=cache,
                      stdout=subprocess.PIPE)  # fmt: skip
    with_torch = _python(
        "from tailmark.server.default_repository import default_repository_path as p; print(p())",
        cache=cache,
        stdout=subprocess.PIPE,
    )
    lean = Path(without.communicate(timeout=60)[0].strip())
    full = Path(with_torch.communicate(timeout=60)[0].strip())
    assert without.returncode == 0 and with_torch.returncode == 0
    assert lean.is_dir() and lean.name.endswith("-no-torch")
    assert full != lean and full.parent == lean.parent and not full.name.endswith("-no-torch")
    assert lean.name == full.name + "-no-torch"  # same version and configs, only torch differs
