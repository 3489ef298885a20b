"""Graceful shutdown, the sync gRPC stack, the health service and the serve command's errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from support.serve import ServerProcess
from tailmark.protos import inference_pb2 as pb


def _tensor(n=2):
    tensor = grpcclient.InferInput("INPUT0", [n], "FP32")
    tensor.set_data_from_numpy(np.arange(n, dtype=np.float32))
    return tensor


@pytest.mark.parametrize("stack", ["aio", "sync", "h2"])
def test_sigterm_drains_in_flight_requests_and_exits_zero(test_repository, stack):
    """Requests in flight on the 50 ms sleep model all complete; the process exits 0."""
    process = ServerProcess(test_repository, "--grpc-stack", stack, "--grace", "20")
    results, errors = [], []
    try:
        client = grpcclient.InferenceServerClient(process.target)

        def one():
            try:
                results.append(client.infer("sleep", [_tensor()]).as_numpy("OUTPUT0"))
            except Exception as exc:  # recorded: the assertion below names it
                errors.append(exc)

        # 2 instances x 50 ms: 12 requests need ~300 ms; SIGTERM lands while most are queued
        threads = [threading.Thread(target=one) for _ in range(12)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        started = time.monotonic()
        code = process.terminate(timeout_s=30)
        for thread in threads:
            thread.join(10)
        assert code == 0
        assert errors == []
        assert len(results) == 12
        assert time.monotonic() - started < 15
        assert any("stopped" in line for line in process.lines)
    finally:
        process.terminate()


def test_sync_stack_serves_the_same_protocol(test_repository):
    with (
        ServerProcess(test_repository, "--grpc-stack", "sync") as process,
        grpcclient.InferenceServerClient(process.target) as client,
    ):
        assert client.is_server_ready()
        assert client.get_model_metadata("identity").inputs[0].name == "INPUT0"
        for _ in range(5):
            out = client.infer("identity", [_tensor(3)]).as_numpy("OUTPUT0")
            np.testing.assert_array_equal(out, np.arange(3, dtype=np.float32))
        bad = grpcclient.InferInput("INPUT0", [3], "INT8")
        bad.set_data_from_numpy(np.zeros(3, np.int8))
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            client.infer("identity", [bad])
        stats = client.get_inference_statistics("identity").model_stats[0].inference_stats
        assert stats.success.count == 5 and stats.fail.count == 1


def test_health_service(server):
    with grpc.insecure_channel(server.target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        assert check(pb.HealthCheckRequest()).status == pb.HealthCheckResponse.SERVING
        service = pb.HealthCheckRequest(service="inference.GRPCInferenceService")
        assert check(service).status == pb.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "port=70000 requested; must be in 0..65535"),
        (["--model-repository", "/no/such/dir"], "is not a directory"),
        (["--max-message-bytes", "0"], "max_message_bytes=0 requested"),
    ],
)
def test_serve_refuses_bad_flags_in_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "tailmark", "serve", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
