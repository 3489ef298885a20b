"""``--transport http`` against MLServer 1.7 (a custom echo runtime) and KServe 0.21's Python model server,
each from PyPI in its own venv (tests/support/rest_peers.py): answers equal to the gRPC path's for the same
requests (JSON tensors; KServe also binary), their errors as gRPC status names, and a VALID Server run."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from support.rest_peers import PeerProcess, PeerUnavailable
from support.runcli import valid_server_run_over_rest
from tailmark.client.http_transport import HttpTransport
from tailmark.client.response_check import checked, output_arrays
from tailmark.client.samples import random_pool
from tailmark.client.transport import GrpcTransport, RequestFailed
from tailmark.protos import inference_pb2 as pb

# MLServer has no binary tensor extension; KServe's REST server has it
MODES = {"mlserver": (True,), "kserve": (True, False)}  # json_tensors values tried


@pytest.fixture(scope="module", params=["mlserver", "kserve"])
def peer(request, tmp_path_factory):
    try:
        with PeerProcess(request.param, tmp_path_factory.mktemp(request.param)) as process:
            process.kind = request.param
            yield process
    except PeerUnavailable as exc:
        pytest.skip(f"{request.param} unavailable: {exc}")


def test_answers_equal_the_grpc_path(peer):
    async def compare():
        over_grpc = await GrpcTransport.connect(peer.grpc_target)
        try:
            for json_tensors in MODES[peer.kind]:
                over_rest = await HttpTransport.connect(peer.http_target, json_tensors=json_tensors)
                try:
                    info = await over_rest.model_info("echo")
                    assert info == await over_grpc.model_info("echo")
                    assert info.config_offered is False  # neither has Triton's /config
                    pool = random_pool(info, count=3, seed=11, shapes={"INPUT0": (7,)})
                    rest_checked, grpc_checked = checked(over_rest, info), checked(over_grpc, info)
                    for sample in range(3):
                        payload = pool.payload(sample)
                        theirs = output_arrays(pb.ModelInferResponse.FromString(await rest_checked.infer(payload)))
                        ours = output_arrays(pb.ModelInferResponse.FromString(await grpc_checked.infer(payload)))
                        assert theirs.keys() == ours.keys() == {"OUTPUT0"}
                        assert theirs["OUTPUT0"].dtype == np.float32
                        np.testing.assert_array_equal(theirs["OUTPUT0"], ours["OUTPUT0"])
                    wrong = pb.ModelInferRequest.FromString(pool.payload(0))
                    wrong.model_name = "no_such_model"
                    with pytest.raises(RequestFailed) as failed:
                        await over_rest.infer(wrong.SerializeToString())
                    assert failed.value.status == "NOT_FOUND", failed.value
                finally:
                    await over_rest.aclose()
        finally:
            await over_grpc.aclose()

    asyncio.run(compare())


def test_a_server_scenario_over_rest_is_valid(peer, tmp_path):
    doc = valid_server_run_over_rest(
        peer.http_target, "echo", tmp_path / "run", target_qps=200, min_queries=550, extra=("--http-json",)
    )
    assert doc["environment"]["client_transport"]["kind"] == "http"
    assert len(doc["environment"]["target"]["notes"]) == 2  # no ModelConfig, no ModelStatistics
