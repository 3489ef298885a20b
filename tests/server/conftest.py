"""Fixtures shared by the server tests: a repository exported from the reference ResNet."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported_repository(tmp_path_factory) -> Path:
    """``resnet`` (TorchScript) and ``resnet_onnx`` with dynamic batching, as ``tailmark export`` writes them."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install 'tailmark[onnx]')")
    from tailmark.models.export import Batching, export_reference, identity_config, write_config

    root = tmp_path_factory.mktemp("exported")
    batching = Batching(max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_us=2000)
    export_reference("resnet", root, batching, formats=("torchscript", "onnx"))
    write_config(root / "identity", identity_config('backend: "identity"'))
    return root


@pytest.fixture(scope="package", params=["sync", "aio", "h2"])
def server(request, test_repository):
    """The server tests run against both gRPC stacks (the session-wide one is the default stack)."""
    from support.serve import ServerProcess

    with ServerProcess(test_repository, "--grpc-stack", request.param) as process:
        yield process
