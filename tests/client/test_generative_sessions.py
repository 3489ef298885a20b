"""Multi-turn sessions against ``tailmark serve``'s synthetic LLM (default repository, ``synth-llm``).

Known truth: the server counts a chat prompt as ``role: content`` lines with the tokenizer rule the client
uses, so turn k + 1's ``prompt_tokens`` is exactly turn k's plus the answer (``assistant:`` is 4 tokens more
in chat) plus the new user text; the completions prompt grows by the answer and the new text alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.client.dispatcher import Dispatcher, Stop
from tailmark.client.openai_transport import OpenAITransport
from tailmark.client.prompts import PromptPool
from tailmark.client.recorder import Recorder
from tailmark.client.sessions import SessionLoop
from tailmark.client.token_metrics import TokenRecorder

INPUT_TOKENS, OUTPUT_TOKENS, THINK_MS, TURNS = 20, 4, 30.0, 3
CHAT_ROLE_TOKENS = {"user": 2, "assistant": 4}  # "user:" = user|:, "assistant:" = assi|stan|t|:


@pytest.fixture(scope="module")
def target():
    with ServerProcess(None, "--http-port", "0") as process:
        yield "http://" + process.rest_address


class Spy:
    """The transport, noting every request's body, send and answer instants, and answer."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[dict, int, int, object]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def infer(self, payload: bytes, timeout_s=None):
        sent = time.perf_counter_ns()
        answer = await self.inner.infer(payload, timeout_s)
        self.calls.append((json.loads(payload), sent, time.perf_counter_ns(), answer))
        return answer


async def _sessions(target: str, api: str) -> tuple[Spy, SessionLoop]:
    transport = await OpenAITransport.connect(target, api=api)
    try:
        info = await transport.model_info("synth-llm")
        pool = PromptPool(info, api=api, count=8, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, seed=3,
                          ignore_eos=True)  # fmt: skip
        spy = Spy(transport)
        dispatcher = Dispatcher(transport=spy, pool=pool, recorder=Recorder(), scenario="s", sample_seed=3,
                                tokens=TokenRecorder())  # fmt: skip
        loop = SessionLoop(dispatcher, turns=TURNS, think_time_ns=round(THINK_MS * 1e6), traffic_class="default")
        await loop.concurrent(sessions=2, warmup_ns=0, stop=Stop(min_duration_ns=0, min_queries=4 * TURNS))
        await dispatcher.drain(10.0)
        return spy, loop
    finally:
        await transport.aclose()


def _user_texts(body: dict, api: str) -> str:
    return body["messages"][0]["content"] if api == "chat" else body["prompt"][:40]


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_turns_go_in_order_after_think_time_with_the_history_carried(target, api):
    spy, loop = asyncio.run(_sessions(target, api))
    sessions: dict[str, list] = {}
    for call in spy.calls:
        sessions.setdefault(_user_texts(call[0], api), []).append(call)
    complete = [calls for calls in sessions.values() if len(calls) == TURNS]
    assert len(complete) >= 3, {k: len(v) for k, v in sessions.items()}
    assert loop.counts.completed == len(complete) and loop.counts.started == len(sessions)
    for calls in complete:
        first_input = calls[0][3].input_tokens
        for (body, _, done, answer), (next_body, next_sent, _, next_answer) in itertools.pairwise(calls):
            assert next_sent >= done + THINK_MS * 1e6  # the next turn waited for the answer and the think time
            text = "".join(answer.text)
            assert answer.output_tokens == OUTPUT_TOKENS
            if api == "chat":  # the messages accumulate: the previous ones, the answer, a new user text
                assert next_body["messages"][: len(body["messages"])] == body["messages"]
                assert next_body["messages"][len(body["messages"])] == {"role": "assistant", "content": text}
                grown = CHAT_ROLE_TOKENS["assistant"] + OUTPUT_TOKENS + first_input
            else:  # the prompt grows by the answer and the new text
                assert next_body["prompt"].startswith(body["prompt"] + text + "\n")
                grown = OUTPUT_TOKENS + first_input
            # the server saw the whole history: its usage counts it, exactly
            assert next_answer.input_tokens == answer.input_tokens + grown
    per_turn = loop.to_dict(arrival="test")["per_turn"]
    means = [t["input_tokens_mean"] for t in per_turn]
    assert [t["turn"] for t in per_turn] == list(range(1, TURNS + 1)) and means == sorted(means) and means[0] < means[1]


def test_sessions_arriving_as_poisson_from_the_command_line(target, tmp_path):
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", target, "--transport", "openai", "--model", "synth-llm", "--api", "chat",
        "--scenario", "poisson", "--target-qps", "8", "--turns", "2", "--think-time-ms", "10", "--duration", "1.5",
        "--warmup", "0", "--min-queries", "8", "--input-tokens", "16", "--output-tokens", "3", "--ignore-eos",
        "--no-calibration", "--no-progress", "--out", str(out), timeout_s=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = scenario(results(out), "poisson")
    sessions = doc["sessions"]
    assert sessions["turns_per_session"] == 2 and sessions["arrival"] == "Poisson, 8 sessions/s"
    assert sessions["started"] >= sessions["completed"] >= 2
    assert sessions["turns_measured"] == doc["classes"]["all"]["ok_count"]
    first, second = sessions["per_turn"]
    assert second["input_tokens_mean"] == first["input_tokens_mean"] + CHAT_ROLE_TOKENS["assistant"] + 3 + 18
    assert doc["settings"]["effective"]["turns"] == 2
    assert doc["settings"]["latency_from"] == "sent"  # later turns are a closed loop per session: marked as such
    assert "poisson sessions (Poisson, 8 sessions/s, 2 turns" in run.stdout  # the console's line


def test_turns_outside_the_session_scenarios_are_refused(target, tmp_path):
    run = tailmark(
        "run", "--target", target, "--transport", "openai", "--model", "synth-llm", "--scenario", "offline",
        "--turns", "2", "--no-calibration", "--out", str(tmp_path / "x"), timeout_s=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert "turns" in run.stderr and "offline" in run.stderr and "Traceback" not in run.stderr
