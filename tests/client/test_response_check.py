"""Every answer is checked (issue 10, items 5 and 8): against real servers on loopback, and real answers altered."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from support.kserve_like import KServeLike
from support.runcli import results, scenario, tailmark
from tailmark.client.control import NO_MODEL_CONFIG, NO_MODEL_STATISTICS, endpoint_notes
from tailmark.client.h2_transport import H2Transport
from tailmark.client.response_check import ReferenceCheck, ResponseCheck
from tailmark.client.samples import random_pool
from tailmark.protos import inference_pb2 as pb

QUICK = ("--scenario", "server", "--target-qps", "100", "--duration", "1", "--min-queries", "50", "--warmup", "0",
         "--no-progress", "--no-calibration")  # fmt: skip


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


async def answers(target: str, model: str, batch: int = 1) -> tuple[ResponseCheck, bytes, bytes]:
    """A check for ``model`` and one real request/answer pair from the server at ``target``."""
    transport = await H2Transport.connect(target)
    try:
        info = await transport.model_info(model)
        payload = random_pool(info, count=4, seed=1).payload(0, batch)
        return ResponseCheck(info), payload, await transport.infer(payload)
    finally:
        await transport.aclose()


def set_raw(message: pb.ModelInferResponse, data: bytes) -> None:
    message.raw_output_contents[0] = data


def altered(response: bytes, change) -> bytes:
    message = pb.ModelInferResponse.FromString(response)
    change(message)
    return message.SerializeToString()


# --- the check on real answers, and on the same answers altered ---


def test_real_answers_pass_and_altered_ones_fail(server):
    check, payload, response = asyncio.run(answers(server.target, "identity_batched", batch=3))
    assert check(payload, response) is None
    assert check(payload, response) is None  # the second one takes the cached layout
    cases = {
        "no outputs": lambda m: (m.ClearField("outputs"), m.ClearField("raw_output_contents")),
        "no data": lambda m: m.ClearField("raw_output_contents"),
        "short data": lambda m: set_raw(m, m.raw_output_contents[0][:-4]),
        "wrong datatype": lambda m: setattr(m.outputs[0], "datatype", "INT32"),
        "wrong batch": lambda m: (m.outputs[0].shape.__setitem__(0, 2), set_raw(m, b"\0" * 32)),
        "wrong fixed dim": lambda m: m.outputs[0].shape.__setitem__(1, 2),
        "renamed": lambda m: setattr(m.outputs[0], "name", "OUTPUTX"),  # same length: the cache must not hide it
        "extra raw": lambda m: m.raw_output_contents.append(b""),
    }  # fmt: skip
    problems = {name: check(payload, altered(response, change)) for name, change in cases.items()}
    assert all(problems.values()), problems
    assert "needs 48 bytes, got 44" in problems["short data"]
    assert "has shape [2, 4], expected [3, 4]" in problems["wrong batch"]
    assert "unexpected output 'OUTPUTX'" in problems["renamed"]
    assert check.bad == len(cases) and check.first_problem == problems["no outputs"]
    assert check(payload, response) is None  # the good layout is still good
    assert check(payload, b"\xff\xff\xff") == "the answer is not a ModelInferResponse (3 bytes)"


def test_same_length_answers_with_swapped_raw_fields_fail(server):
    """Two outputs of 16 and 12 bytes answered as 12 + 16: same total length, same header, still refused."""
    check, payload, response = asyncio.run(answers(server.target, "two_inputs"))
    assert check(payload, response) is None
    swapped = altered(response, lambda m: m.raw_output_contents.reverse())
    assert len(swapped) == len(response)
    assert check(payload, swapped) == "output 'A_OUT': INT32 [2, 2] needs 16 bytes, got 12"


def test_bytes_outputs_and_typed_contents_are_understood(server):
    check, payload, response = asyncio.run(answers(server.target, "identity_bytes"))
    assert check(payload, response) is None
    assert "BYTES [16] needs at least 64 bytes" in check(payload, altered(response, lambda m: set_raw(m, b"x")))
    check, payload, response = asyncio.run(answers(server.target, "identity"))

    def typed(message, count=16):
        message.outputs[0].contents.fp32_contents.extend([0.5] * count)
        message.ClearField("raw_output_contents")

    assert check(payload, altered(response, typed)) is None
    assert "needs 16 values in fp32_contents, got 15" in check(payload, altered(response, lambda m: typed(m, 15)))


def test_full_check_compares_with_the_first_answer(server):
    _, payload, response = asyncio.run(answers(server.target, "identity"))
    check = ReferenceCheck(_info(server, "identity"))
    values = pb.ModelInferResponse.FromString(response).raw_output_contents[0]
    first = np.frombuffer(values, np.float32)

    def answer(array):
        return altered(response, lambda m: set_raw(m, array.astype(np.float32).tobytes()))

    scale = float(np.abs(first).max())
    assert check(payload, response) is None  # the reference
    assert check(payload, response) is None and check.compared == 1
    assert check(payload, answer(first + 1e-4 * scale)) is None  # within 1e-3 of the largest magnitude
    problem = check(payload, answer(first + np.eye(1, len(first), 5, dtype=np.float32)[0] * 0.01 * scale))
    assert problem is not None and "at element 5" in problem
    assert "at element 0" in check(payload, answer(np.where(np.arange(len(first)) == 0, np.nan, first)))
    other = random_pool(_info(server, "identity"), count=4, seed=1).payload(1)
    assert check(other, answer(first + scale)) is None  # another request: it becomes that request's reference


def _info(server, model: str):
    async def fetch():
        transport = await H2Transport.connect(server.target)
        try:
            return await transport.model_info(model)
        finally:
            await transport.aclose()

    return asyncio.run(fetch())


# --- the check in runs: a bad answer is an error of its own ---


def test_empty_answers_are_counted_as_bad_responses(tmp_path):
    """OK with no outputs (Triton with a broken python stub): BAD_RESPONSE, not success; --validate none trusts it."""
    with KServeLike(answer="empty") as endpoint:
        run = tailmark("run", "--target", endpoint.target, "--model", "echo", *QUICK, "--out", str(tmp_path / "a"))
        unchecked = tailmark(
            "run", "--target", endpoint.target, "--model", "echo", *QUICK, "--validate", "none", "--out",
            str(tmp_path / "b"),
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    checked = scenario(results(tmp_path / "a"), "server")["classes"]["all"]
    assert checked["ok_count"] == 0 and checked["errors"] == {"BAD_RESPONSE": checked["query_count"]}
    assert checked["query_count"] >= 50
    verdict = checked["verdict"]
    assert verdict["result"] == "INVALID"
    assert any(c["name"] == "errors" and not c["passed"] for c in verdict["checks"])
    assert unchecked.returncode == 0, unchecked.stderr
    trusted = scenario(results(tmp_path / "b"), "server")["classes"]["all"]
    assert trusted["error_count"] == 0 and trusted["ok_count"] >= 50


def test_typed_answers_pass_the_check_and_accuracy_decodes_them(tmp_path):
    """KServe answers in typed contents: a run counts them as successes and accuracy mode reads them."""
    samples = np.zeros((12, 4), np.float32)
    samples[np.arange(12), np.arange(12) % 4] = 1.0
    np.save(tmp_path / "x.npy", samples)
    np.save(tmp_path / "y.npy", np.arange(12) % 4)
    with KServeLike(answer="typed") as endpoint:
        run = tailmark("run", "--target", endpoint.target, "--model", "echo", *QUICK, "--out", str(tmp_path / "run"))
        accuracy = tailmark(
            "accuracy", "--target", endpoint.target, "--model", "echo", "--input-data", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "y.npy"),
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(tmp_path / "run")
    classes = scenario(doc, "server")["classes"]["all"]
    assert classes["error_count"] == 0 and classes["ok_count"] >= 50
    # the extensions KServe lacks are said once, in results.json and in the table
    assert doc["environment"]["target"]["notes"] == [NO_MODEL_CONFIG, NO_MODEL_STATISTICS]
    assert f"endpoint: {NO_MODEL_STATISTICS}" in run.stdout
    assert accuracy.returncode == 0, accuracy.stderr
    assert "top-1 1.0000 (12/12)" in accuracy.stdout


def test_accuracy_counts_empty_answers_as_bad_responses(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((6, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(6, np.int64))
    with KServeLike(answer="empty") as endpoint:
        accuracy = tailmark(
            "accuracy", "--target", endpoint.target, "--model", "echo", "--input-data", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "y.npy"),
        )  # fmt: skip
    assert accuracy.returncode == 1, accuracy.stderr
    assert "top-1 0.0000 (0/6), failed requests: {'BAD_RESPONSE': 6}" in accuracy.stdout
    assert "first: the answer has no outputs" in accuracy.stderr and "Traceback" not in accuracy.stderr


def test_full_validation_catches_an_endpoint_that_answers_differently(server, tmp_path):
    with KServeLike(answer="noisy") as endpoint:
        basic = tailmark("run", "--target", endpoint.target, "--model", "echo", *QUICK, "--out", str(tmp_path / "a"))
        full = tailmark(
            "run", "--target", endpoint.target, "--model", "echo", *QUICK, "--validate", "full", "--pool-size", "4",
            "--out", str(tmp_path / "b"),
        )  # fmt: skip
    steady = tailmark(
        "run", "--target", server.target, "--model", "identity", *QUICK, "--validate", "full", "--pool-size", "4",
        "--out", str(tmp_path / "c"),
    )  # fmt: skip
    for run in (basic, full, steady):
        assert run.returncode == 0, run.stderr
    assert scenario(results(tmp_path / "a"), "server")["classes"]["all"]["error_count"] == 0
    noisy = scenario(results(tmp_path / "b"), "server")["classes"]["all"]
    # the first answer to each of the 4 samples is its reference; every later one differs from it
    assert noisy["errors"]["BAD_RESPONSE"] >= noisy["query_count"] - 4 - 1
    assert scenario(results(tmp_path / "c"), "server")["classes"]["all"]["error_count"] == 0


# --- refused up front, in one line ---


def test_a_model_without_inputs_is_refused_up_front(tmp_path):
    with KServeLike(inputs=False) as endpoint:
        run = tailmark("run", "--target", endpoint.target, "--model", "echo", *QUICK, "--out", str(tmp_path / "run"))
        assert endpoint.calls == 0
    assert run.returncode == 2
    assert "model 'echo'" in one_line(run.stderr) and "lists no inputs" in run.stderr


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("NOPE:4", "--shape NOPE: model 'identity' has no input 'NOPE' (its inputs: INPUT0)"),
        ("INPUT0:4,4", "--shape INPUT0:4,4: the model takes [-1] per sample"),
    ],
)
def test_a_shape_the_model_cannot_take_is_refused(server, tmp_path, shape, message):
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", *QUICK, "--shape", shape, "--out", str(tmp_path)
    )
    assert run.returncode == 2
    assert message in one_line(run.stderr)


def test_missing_extensions_are_noted_once(server):
    async def notes(target: str, model: str):
        transport = await H2Transport.connect(target)
        try:
            info = await transport.model_info(model)
            return info.config_offered, await endpoint_notes(transport, info)
        finally:
            await transport.aclose()

    with KServeLike() as endpoint:
        assert asyncio.run(notes(endpoint.target, "echo")) == (False, [NO_MODEL_CONFIG, NO_MODEL_STATISTICS])
    assert asyncio.run(notes(server.target, "identity")) == (True, [])
