"""TLS, mutual TLS and bearer-token auth on a real server; repository paths that escape the root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.pki import make_pki
from support.repository import identity_config
from support.serve import ServerProcess
from tailmark.server.default_repository import write_model
from tailmark.server.repository import Repository

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _identity(client, **kwargs) -> np.ndarray:
    tensor = grpcclient.InferInput("INPUT0", [3], "FP32")
    tensor.set_data_from_numpy(np.arange(3, dtype=np.float32))
    return client.infer("identity", [tensor], **kwargs).as_numpy("OUTPUT0")


@pytest.mark.parametrize("stack", ["sync", "aio", "h2"])
def test_bearer_token_is_required_on_every_rpc(test_repository, stack):
    with (
        ServerProcess(test_repository, "--grpc-stack", stack, "--auth-token", TOKEN) as process,
        grpcclient.InferenceServerClient(process.target) as client,
    ):
        for call in (
            lambda **kw: client.is_server_live(headers=kw.get("headers")),
            lambda **kw: _identity(client, **kw),
        ):
            with pytest.raises(InferenceServerException) as error:
                call()
            assert error.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as error:
                call(headers={"authorization": "Bearer wrong"})
            assert error.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.is_server_live(headers={"authorization": f"Bearer {TOKEN}"})
        out = _identity(client, headers={"authorization": f"Bearer {TOKEN}"})
        np.testing.assert_array_equal(out, np.arange(3, dtype=np.float32))


def test_auth_token_from_the_environment(test_repository):
    os.environ["TAILMARK_AUTH_TOKEN"] = TOKEN
    try:
        process = ServerProcess(test_repository)
    finally:
        del os.environ["TAILMARK_AUTH_TOKEN"]
    with process, grpcclient.InferenceServerClient(process.target) as client:
        with pytest.raises(InferenceServerException, match=r"UNAUTHENTICATED|bearer"):
            client.is_server_live()
        assert client.is_server_live(headers={"authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize("stack", ["sync", "aio", "h2"])
def test_tls_serves_tls_clients_only(test_repository, pki, stack):
    args = ("--grpc-stack", stack, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))
    with ServerProcess(test_repository, *args) as process:
        with grpcclient.InferenceServerClient(
            process.target, ssl=True, root_certificates=str(pki / "ca.pem")
        ) as client:
            np.testing.assert_array_equal(_identity(client), np.arange(3, dtype=np.float32))
        with grpcclient.InferenceServerClient(process.target) as plaintext, pytest.raises(InferenceServerException):
            plaintext.is_server_live(client_timeout=5)


def test_mutual_tls_requires_a_client_certificate(test_repository, pki):
    args = [
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
    ]
    with ServerProcess(test_repository, *args) as process:
        with grpcclient.InferenceServerClient(
            process.target,
            ssl=True,
            root_certificates=str(pki / "ca.pem"),
            private_key=str(pki / "client.key"),
            certificate_chain=str(pki / "client.pem"),
        ) as client:
            assert client.is_server_live()
        anonymous = grpcclient.InferenceServerClient(process.target, ssl=True, root_certificates=str(pki / "ca.pem"))
        with anonymous, pytest.raises(InferenceServerException):
            anonymous.is_server_live(client_timeout=5)


def test_bad_tls_flags_are_usage_errors(test_repository, pki):
    done = subprocess.run(
        [sys.executable, "-m", "tailmark", "serve", "--model-repository", str(test_repository),
         "--tls-cert", str(pki / "server.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "tls_cert and tls_key go together" in done.stderr


def test_paths_that_escape_the_repository_root_are_refused(tmp_path):
    outside = tmp_path / "outside"
    write_model(outside, "elsewhere", identity_config())
    (outside / "secret.pt").write_text("not yours")
    root = tmp_path / "repo"
    write_model(root, "identity", identity_config())
    (root / "linked_model").symlink_to(outside / "elsewhere")
    write_model(
        root, "linked_file", 'platform: "pytorch_libtorch"\n' + identity_config().replace('backend: "identity"', "")
    )
    (root / "linked_file" / "1" / "model.pt").symlink_to(outside / "secret.pt")
    repository = Repository(root)
    repository.load_all()
    assert repository.models["identity"].ready
    for name in ("linked_model", "linked_file"):
        assert not repository.models[name].ready
        assert "outside the model repository" in repository.models[name].reason
