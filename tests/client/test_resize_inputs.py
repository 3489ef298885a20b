"""Which inputs a trace's token counts resize: the rule per model, the setting, and the flag."""

from __future__ import annotations

import pytest
import uvloop

from support.runcli import tailmark
from tailmark.client.errors import ConfigError
from tailmark.client.progress import Progress
from tailmark.client.results import RunResult
from tailmark.client.run import Run
from tailmark.client.samples import random_pool, resized_inputs
from tailmark.client.settings import Scenario, ScenarioSettings, resolve
from tailmark.client.transport import MockTransport, ModelInfo, TensorInfo
from tailmark.protos import inference_pb2 as pb
from tailmark.traces.arrival import Arrival
from tailmark.traces.writer import write_trace


def model(*inputs: tuple[str, str, tuple[int, ...]], max_batch_size: int = 0) -> ModelInfo:
    return ModelInfo("m", "1", "test", tuple(TensorInfo(*i) for i in inputs), (), max_batch_size)


# (model, auto, tokens): the inputs each choice resizes
CASES = {
    "token ids": (model(("input_ids", "INT64", (-1,))), ("input_ids",), ("input_ids",)),
    "token ids, batching": (
        model(("input_ids", "INT32", (-1, -1)), ("attention_mask", "INT32", (-1, -1)), max_batch_size=8),
        ("input_ids", "attention_mask"),
        ("input_ids", "attention_mask"),
    ),
    "text prompt": (model(("TEXT", "BYTES", (-1,))), ("TEXT",), ("TEXT",)),
    "null model (FP32 [-1])": (model(("INPUT0", "FP32", (-1,))), (), ("INPUT0",)),
    "embeddings": (model(("inputs_embeds", "FP16", (-1, 768))), (), ("inputs_embeds",)),
    "image, batch dim only variable": (model(("input", "FP32", (-1, 3, 224, 224)), max_batch_size=8), (), ()),
    "class ids, fixed shape": (model(("labels", "INT64", (-1, 4)), max_batch_size=4), (), ()),
    "multimodal": (
        model(("input_ids", "INT64", (-1, -1)), ("pixel_values", "FP32", (-1, 3, -1, -1)), max_batch_size=2),
        ("input_ids",),
        ("input_ids", "pixel_values"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_resize_rule(name: str) -> None:
    info, auto, tokens = CASES[name]
    assert resized_inputs(info, "auto") == auto
    assert resized_inputs(info, "tokens") == tokens
    assert resized_inputs(info, "none") == ()


def test_unknown_choice_is_refused() -> None:
    with pytest.raises(ConfigError, match="resize_inputs=bytes requested; must be one of auto, tokens, none"):
        resized_inputs(CASES["token ids"][0], "bytes")


def test_setting_defaults_to_auto_and_is_recorded() -> None:
    eff = resolve(ScenarioSettings(scenario=Scenario.TRACE, trace_path="t.jsonl"), mlperf=False)
    assert eff.resize_inputs == "auto"
    assert eff.to_dict()["effective"]["resize_inputs"] == "auto"
    assert eff.to_dict()["requested"]["resize_inputs"] is None
    asked = resolve(ScenarioSettings(scenario=Scenario.TRACE, trace_path="t.jsonl", resize_inputs="none"), mlperf=False)
    assert asked.to_dict()["effective"]["resize_inputs"] == asked.requested.resize_inputs == "none"


def test_setting_refuses_an_unknown_choice() -> None:
    with pytest.raises(ConfigError, match="resize_inputs=all requested; must be one of auto, tokens, none"):
        resolve(ScenarioSettings(scenario=Scenario.TRACE, trace_path="t.jsonl", resize_inputs="all"), mlperf=False)


def test_flag_refuses_an_unknown_choice_before_connecting() -> None:
    run = tailmark(
        "run", "--target", "127.0.0.1:9", "--model", "m", "--scenario", "trace", "--trace", "t.jsonl",
        "--resize-inputs", "always", "--no-progress",
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "resize_inputs=always requested; must be one of auto, tokens, none" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(("choice", "resized"), [("tokens", True), ("none", False)])
def test_a_run_sends_what_the_setting_chooses(tmp_path, choice: str, resized: bool) -> None:
    """The setting reaches the dispatcher of a real Run: a float input is resized only when asked."""
    trace = tmp_path / "t.jsonl"
    write_trace(trace, [Arrival(offset_ns=i * 2_000_000, payload_size=100 + i) for i in range(50)])
    model = ModelInfo("null", "1", "test", (TensorInfo("INPUT0", "FP32", (-1,)),), (), 0)
    shapes: list[int] = []

    async def answer(payload: bytes) -> bytes:
        shapes.append(pb.ModelInferRequest.FromString(payload).inputs[0].shape[0])
        return b""

    settings = resolve(
        ScenarioSettings(scenario=Scenario.TRACE, trace_path=str(trace), resize_inputs=choice, warmup_s=0.0,
                         min_duration_s=0.05, min_query_count=1),
        mlperf=False,
    )  # fmt: skip
    run = Run(
        scenarios=[settings], transport=MockTransport(model, answer), pool=random_pool(model, count=4, seed=1),
        out_dir=tmp_path, result=RunResult(environment={}), progress=Progress(enabled=False),
    )  # fmt: skip
    uvloop.run(run.execute())
    assert len(shapes) == 50
    if resized:
        assert shapes == [100 + i for i in range(50)]
    else:
        assert set(shapes) == {16}  # the pool's default length for a variable dimension
