"""The client over TLS, mutual TLS and with request metadata (bearer tokens), against a real server."""

from __future__ import annotations

import pytest

from support.pki import make_pki
from support.runcli import results, tailmark
from support.serve import ServerProcess

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def quick(target: str, out, *extra: str):
    return tailmark(
        "run", "--target", target, "--model", "identity", "--scenario", "single-stream", "--duration", "0.5",
        "--warmup", "0", "--min-queries", "10", "--out", str(out), "--no-progress", "--connect-timeout", "3", *extra,
        "--no-calibration",
    )  # fmt: skip


@pytest.mark.parametrize(("stack", "transport"), [("h2", "h2"), ("aio", "h2"), ("h2", "grpc")])
def test_mutual_tls_and_bearer_token(test_repository, pki, tmp_path, stack, transport):
    """Both client transports against both asyncio server stacks (grpc's C core and tailmark's h2)."""
    args = [
        "--grpc-stack",
        stack,
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
    ]
    with ServerProcess(test_repository, *args, "--auth-token", TOKEN) as server:
        client_tls = ["--transport", transport, "--tls-ca", str(pki / "ca.pem"), "--tls-cert",
                      str(pki / "client.pem"), "--tls-key", str(pki / "client.key")]  # fmt: skip
        ok = quick(server.target, tmp_path / "ok", *client_tls, "--header", f"authorization: Bearer {TOKEN}")
        assert ok.returncode == 0, ok.stderr
        measured = results(tmp_path / "ok")["scenarios"][0]["classes"]["all"]
        assert measured["ok_count"] >= 10 and measured["error_count"] == 0

        no_token = quick(server.target, tmp_path / "nt", *client_tls)
        assert no_token.returncode == 1
        assert "UNAUTHENTICATED" in no_token.stderr and "Traceback" not in no_token.stderr

        no_cert = quick(server.target, tmp_path / "nc", "--transport", transport, "--tls-ca", str(pki / "ca.pem"))
        assert no_cert.returncode == 1 and "cannot connect" in no_cert.stderr and "Traceback" not in no_cert.stderr

        plain = quick(server.target, tmp_path / "pl", "--transport", transport)
        assert plain.returncode == 1 and "cannot connect" in plain.stderr and "Traceback" not in plain.stderr


def test_half_a_client_key_pair_is_refused(server, pki, tmp_path):
    run = quick(server.target, tmp_path / "r", "--tls-cert", str(pki / "client.pem"))
    assert run.returncode == 2
    assert "needs both --tls-cert and --tls-key" in run.stderr
