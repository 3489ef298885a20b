"""The h2 transport (tailmark's own HTTP/2 client) against real servers: both of tailmark's asyncio stacks
(grpc.aio's C core and the h2 frontend), with grpc.aio's transport as the reference."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import uvloop

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.client.errors import ConfigError, ModelNotFound, Unreachable
from tailmark.client.h2_transport import LAST_STREAM_ID, H2Transport, split_target
from tailmark.client.transport import GrpcTransport, RequestFailed
from tailmark.protos import inference_pb2 as pb


@pytest.fixture(scope="module", params=["aio", "h2"])
def stack_server(request, test_repository):
    with ServerProcess(test_repository, "--grpc-stack", request.param) as process:
        yield process


def infer_request(model: str, values: np.ndarray, request_id: str = "") -> bytes:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(values.shape))
    request.raw_input_contents.append(values.astype(np.float32).tobytes())
    return request.SerializeToString()


def output_of(response: bytes) -> np.ndarray:
    parsed = pb.ModelInferResponse.FromString(response)
    return np.frombuffer(parsed.raw_output_contents[0], np.float32)


def run(coro):
    return uvloop.run(coro)


def test_answers_match_grpc_aio_for_every_call_kind(stack_server):
    async def main():
        payload = infer_request("identity", np.arange(16, dtype=np.float32), "one")
        h2 = await H2Transport.connect(stack_server.target)
        reference = await GrpcTransport.connect(stack_server.target)
        try:
            assert await h2.infer(payload) == await reference.infer(payload)
            assert await h2.model_info("identity") == await reference.model_info("identity")
            assert await h2.server_ready() is True
            stats = await h2.model_statistics("identity")
            assert stats.model_stats[0].name == "identity" and stats.model_stats[0].inference_count >= 2
        finally:
            await h2.aclose()
            await reference.aclose()

    run(main())


def test_many_calls_in_flight_and_large_tensors_through_flow_control(stack_server):
    async def main():
        h2 = await H2Transport.connect(stack_server.target, connections=2)
        try:
            rng = np.random.default_rng(0)
            small = [rng.random(16, dtype=np.float32) for _ in range(300)]
            answers = await asyncio.gather(
                *(h2.infer(infer_request("identity", v, str(i))) for i, v in enumerate(small))
            )
            for values, answer in zip(small, answers, strict=True):
                np.testing.assert_array_equal(output_of(answer), values)
            large = [rng.random(n, dtype=np.float32) for n in (4 << 20, 1 << 20, 2 << 20)]  # 16, 4 and 8 MiB
            answers = await asyncio.gather(*(h2.infer(infer_request("identity", v)) for v in large))
            for values, answer in zip(large, answers, strict=True):
                np.testing.assert_array_equal(output_of(answer), values)
        finally:
            await h2.aclose()

    run(main())


def test_errors_come_back_as_statuses_and_the_connection_keeps_working(stack_server):
    async def main():
        h2 = await H2Transport.connect(stack_server.target)
        try:
            with pytest.raises(ModelNotFound, match="does not serve model 'nope'"):
                await h2.model_info("nope")
            with pytest.raises(RequestFailed) as failed:
                await h2.infer(infer_request("nope", np.zeros(4, np.float32)))
            assert failed.value.status == "NOT_FOUND"
            with pytest.raises(RequestFailed) as failed:
                await h2.infer(b"\xff\xff not a protobuf")
            assert failed.value.status == "INVALID_ARGUMENT"
            started = time.perf_counter()
            with pytest.raises(RequestFailed) as failed:  # the sleep model takes 50 ms
                await h2.infer(infer_request("sleep", np.zeros(4, np.float32)), timeout_s=0.01)
            assert failed.value.status == "DEADLINE_EXCEEDED"
            assert time.perf_counter() - started < 1.0  # and nothing hangs
            slow = asyncio.ensure_future(h2.infer(infer_request("sleep", np.zeros(4, np.float32))))
            await asyncio.sleep(0.005)
            slow.cancel()  # a cancelled caller resets its stream
            with pytest.raises(asyncio.CancelledError):
                await slow
            values = np.arange(4, dtype=np.float32)
            np.testing.assert_array_equal(output_of(await h2.infer(infer_request("identity", values))), values)
        finally:
            await h2.aclose()

    run(main())


def test_unreachable_target_and_bad_target():
    async def main():
        with pytest.raises(Unreachable, match=r"cannot connect to 127\.0\.0\.1:1"):
            await H2Transport.connect("127.0.0.1:1", connect_timeout_s=2)

    run(main())
    assert split_target("[::1]:8001") == ("::1", 8001)
    with pytest.raises(ConfigError, match="must be ASCII"):
        H2Transport("127.0.0.1:1", tls=None, metadata=[("x-user", "zoë")], timeout_s=1, connections=1)
    assert split_target("dns:///localhost:9") == ("localhost", 9)


def test_a_server_that_dies_fails_calls_as_unavailable(test_repository):
    async def main(server):
        h2 = await H2Transport.connect(server.target)
        try:
            pending = [asyncio.ensure_future(h2.infer(infer_request("sleep", np.zeros(4, np.float32))))
                       for _ in range(4)]  # fmt: skip
            await asyncio.sleep(0.01)
            server.process.kill()
            outcomes = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
            assert all(isinstance(o, RequestFailed) and o.status == "UNAVAILABLE" for o in outcomes), outcomes
            with pytest.raises(RequestFailed) as later:  # reconnecting fails cleanly too
                await h2.infer(infer_request("identity", np.zeros(4, np.float32)))
            assert later.value.status == "UNAVAILABLE"
        finally:
            await h2.aclose()

    with ServerProcess(test_repository, "--grpc-stack", "h2") as server:
        run(main(server))


def test_cli_server_scenario_over_two_connections(server, tmp_path):
    run_ = tailmark(
        "run", "--target", server.target, "--model", "identity", "--scenario", "server", "--target-qps", "300",
        "--duration", "1", "--warmup", "0", "--min-queries", "100", "--out", str(tmp_path / "r"), "--no-progress",
        "--transport", "h2", "--connections", "2", "--no-calibration",
    )  # fmt: skip
    assert run_.returncode == 0, run_.stderr
    doc = results(tmp_path / "r")
    assert doc["environment"]["client_transport"] == {"kind": "h2", "connections": 2}
    measured = scenario(doc, "server")["classes"]["all"]
    assert measured["ok_count"] >= 100 and measured["error_count"] == 0


def test_spent_stream_ids_move_new_calls_to_a_new_connection(stack_server):
    async def main():
        h2 = await H2Transport.connect(stack_server.target)
        try:
            first = h2._connections[0]
            first.h2._next_stream_id = LAST_STREAM_ID - 2  # as after ~1e9 calls
            values = np.arange(4, dtype=np.float32)
            for _ in range(2):  # the second call takes the last id
                np.testing.assert_array_equal(output_of(await h2.infer(infer_request("identity", values))), values)
            assert not first.usable
            np.testing.assert_array_equal(output_of(await h2.infer(infer_request("identity", values))), values)
            assert h2._connections[0] is not first
        finally:
            await h2.aclose()

    run(main())
