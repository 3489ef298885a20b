"""``python -m tailmark.deploy.healthcheck``, the images' HEALTHCHECK: grpc.health.v1 against tailmark's server
(every gRPC stack), a service it does not offer, a closed port, and real Triton's health service."""

from __future__ import annotations

import shutil

import pytest

from support.repository import identity_config
from support.serve import ServerProcess
from tailmark.deploy.healthcheck import check, main
from tailmark.deploy.server_process import free_port
from tailmark.server.default_repository import write_model


@pytest.fixture(scope="module")
def one_model(tmp_path_factory):
    """A repository of one identity model: a server that starts in seconds."""
    root = tmp_path_factory.mktemp("one-model")
    write_model(root, "identity", identity_config())
    return root


@pytest.mark.parametrize("stack", ["h2", "aio", "sync"])
def test_serving_server_passes(one_model, stack, capsys):
    with ServerProcess(one_model, "--grpc-stack", stack) as server:
        assert main([server.target]) == 0
        assert main([server.target, "--service", "no.such.Service"]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"healthcheck: {server.target}: SERVING"
    assert "NOT_FOUND" in err


def test_closed_port_fails_in_one_line(capsys, monkeypatch):
    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("TAILMARK_HEALTH_TARGET", closed)  # what the images set when the server moves
    assert main(["--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"healthcheck: {closed}: UNAVAILABLE") and err.count("\n") == 1


def test_real_triton_answers_the_same_probe(tmp_path):
    from tailmark.deploy.triton.launch import TritonProcess, TritonUnavailable, ensure_venv
    from tailmark.deploy.triton.repository import PYTHON_MODEL
    from tailmark.models.export import identity_config, write_config

    try:
        ensure_venv()
    except TritonUnavailable as exc:
        pytest.skip(f"real Triton unavailable: {exc}")
    model = tmp_path / "repo" / "identity"
    kind = 'parameters { key: "tailmark_kind" value: { string_value: "identity" } }\n'
    write_config(model, identity_config('backend: "python"', kind))
    shutil.copyfile(PYTHON_MODEL, model / "1" / "model.py")
    with TritonProcess(tmp_path / "repo", log_path=tmp_path / "tritonserver.log") as triton:
        assert check(triton.target) == "SERVING"
