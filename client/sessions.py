"""Multi-turn sessions: a conversation's next turn goes out after its previous answer plus a think time.

A session is ``turns`` requests in order. Turn 1's user text is a prompt of ``--input-tokens`` tokens; every
later turn carries the whole history before a new user text of the same length: with the chat API the
messages accumulate (user, assistant, user, ...; the assistant's content is the text the client received),
with the completions API the prompt grows (previous prompt + answer + a newline + the new text). So the
server sees the history grow turn by turn (its usage's ``prompt_tokens`` shows it).

When turns are sent:

- turn 1: in the concurrency scenario, each of the N slots starts a session as soon as its last one ended
  (plus the think time); in the server and poisson scenarios, sessions *arrive* as a Poisson process at
  ``--target-qps`` sessions a second (the schedule's seed), each one's turn 1 intended at its arrival;
- turn k + 1: intended at turn k's done instant plus ``--think-time-ms``. That is a closed loop per session,
  like the concurrency scenario's slots: a slow answer delays the session's next turn instead of piling
  requests up, and latency measured from that intended instant hides nothing of the client's own lateness
  (a late send shows as send lag), but it is not an open-loop schedule. ``latency_from`` in results.json
  says which loop a scenario is; ``sessions.later_turns_from`` says it for the turns after the first.

A turn that fails (or is cancelled, client/cancellation.py) ends its session: its history would be broken.
When the stop rule is met no session sends another turn; sessions cut short are counted.

Per turn number, the token metrics of its answers (``TokenStats``) are kept beside the scenario's, so TTFT
growing with the history shows; results.json's ``sessions`` holds them and the counts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tailmark.client.errors import ConfigError
from tailmark.client.generation import Generation
from tailmark.client.schedule import poisson
from tailmark.client.token_metrics import TokenStats

NS = 1_000_000_000


class Conversation:
    """One session's history and the body of its next turn."""

    def __init__(self, pool, number: int, turns: int) -> None:
        self.pool = pool
        self.number = number
        self.turns = turns
        self.users: list[str] = []
        self.answers: list[str] = []

    def next_body(self) -> bytes:
        """The request body of turn ``len(self.answers) + 1``: the history, then a new user text."""
        self.users.append(self.pool.prompt(self.number * self.turns + len(self.answers)))
        pool = self.pool
        if pool.api == "chat":
            messages = []
            for user, answer in zip(self.users, [*self.answers, None], strict=True):
                messages.append({"role": "user", "content": user})
                if answer is not None:
                    messages.append({"role": "assistant", "content": answer})
            document = pool.body("")
            document["messages"] = messages
        else:
            prompt = "".join(user + answer + "\n" for user, answer in zip(self.users, self.answers, strict=False))
            document = pool.body(prompt + self.users[-1])
        return pool.encode(document)  # JSON for openai, a ModelInferRequest for grpc-stream (client/prompts.py)

    def answered(self, generation: Generation) -> None:
        self.answers.append("".join(generation.text))


@dataclass
class SessionCounts:
    started: int = 0  # sessions whose first turn was sent
    completed: int = 0  # sessions that got every turn's answer
    cut_by_stop: int = 0  # sessions that stopped early because the run's stop rule was met
    ended_by_failure: int = 0  # sessions that stopped because a turn failed or was cancelled
    per_turn: dict[int, TokenStats] = field(default_factory=dict)  # turn number -> its measured answers


class SessionLoop:
    """Runs sessions through a Dispatcher (its ``_send`` records every turn like any request)."""

    def __init__(self, dispatcher, *, turns: int, think_time_ns: int, traffic_class: str) -> None:
        pool = dispatcher.pool
        if not hasattr(pool, "prompt"):
            raise ConfigError("--turns: multi-turn sessions need a generative endpoint (--transport openai)")
        if turns < 2:
            raise ConfigError(f"--turns {turns}: a session has at least 2 turns")
        self.d = dispatcher
        self.turns = turns
        self.think_ns = think_time_ns
        self.traffic_class = traffic_class
        self.counts = SessionCounts()
        self._finished = asyncio.Event()
        self._numbers = 0

    async def concurrent(self, *, sessions: int, warmup_ns: int, stop) -> object:
        """``sessions`` sessions at a time: each slot starts the next one when its last one ends."""
        window = self.d.window
        window.start_ns = window.end_ns = time.perf_counter_ns() + warmup_ns
        self._cpu0 = None

        async def slot() -> None:
            intended = time.perf_counter_ns()
            while not self._stopping():
                intended = await self._session(intended, stop)

        await self._run([slot() for _ in range(sessions)])
        return self._close_window()

    async def arriving(self, *, rate_qps: float, seed: int, warmup_ns: int, stop) -> object:
        """Sessions arriving as a Poisson process of ``rate_qps`` a second; each runs all its turns."""
        window = self.d.window
        start_ns = time.perf_counter_ns()
        window.start_ns = window.end_ns = start_ns + warmup_ns
        self._cpu0 = None
        tasks = []
        for arrival in poisson(rate_qps, seed=seed):
            intended = start_ns + arrival.offset_ns
            if self._stopping() or stop.exceeded(intended - window.start_ns, self.d.issued):
                break
            await self.d._clock.sleep_until(intended)
            tasks.append(asyncio.get_running_loop().create_task(self._session(intended, stop)))
            tasks = [t for t in tasks if not t.done()] if len(tasks) > 256 else tasks
        await self._run(tasks)
        return self._close_window()

    def _stopping(self) -> bool:
        return bool(self.d.stop_reason or self._finished.is_set())

    async def _run(self, coros) -> None:
        try:
            await asyncio.gather(*coros)
        finally:
            self.d._clock.close()

    def _close_window(self):
        window = self.d.window
        window.cpu_s = time.process_time() - (self._cpu0 if self._cpu0 is not None else time.process_time())
        window.interrupted = self.d.stop_reason
        return window

    async def _session(self, intended_ns: int, stop) -> int:
        """One session from turn 1 at ``intended_ns``; returns the instant its slot may start another."""
        d, window = self.d, self.d.window
        self._numbers += 1
        conversation = Conversation(d.pool, self._numbers, self.turns)
        self.counts.started += 1
        for turn in range(1, self.turns + 1):
            if self._stopping():
                self.counts.cut_by_stop += 1
                return intended_ns
            if intended_ns > time.perf_counter_ns():
                await d._clock.sleep_until(intended_ns)
            measured = intended_ns >= window.start_ns
            if measured:
                if self._cpu0 is None:
                    self._cpu0 = time.process_time()
                if stop.exceeded(intended_ns - window.start_ns, d.issued):
                    self._finished.set()
                    self.counts.cut_by_stop += 1
                    return intended_ns
                d.issued += 1
                window.offered[self.traffic_class] += 1
                window.end_ns = max(window.end_ns, intended_ns)
                if stop.satisfied(intended_ns - window.start_ns, d.issued):
                    self._finished.set()  # this turn still goes; no session sends another
            d.outstanding += 1
            body = conversation.next_body()
            answer = await d._send(body, intended_ns, self.traffic_class, measured)
            done_ns = time.perf_counter_ns()
            if not isinstance(answer, Generation):
                self.counts.ended_by_failure += 1
                return done_ns + self.think_ns
            if measured:
                stats = self.counts.per_turn.setdefault(turn, TokenStats())
                stats.record(intended_ns, intended_ns, done_ns, answer)
            conversation.answered(answer)
            intended_ns = done_ns + self.think_ns
        self.counts.completed += 1
        return intended_ns

    def to_dict(self, *, arrival: str) -> dict:
        from tailmark.client.results import latency_summary

        per_turn = []
        for turn, stats in sorted(self.counts.per_turn.items()):
            stats.flush()
            per_turn.append({
                "turn": turn,
                "requests": stats.requests,
                "input_tokens_mean": round(stats.input_tokens / stats.requests, 3) if stats.requests else None,
                "output_tokens_mean": round(stats.output_tokens / stats.requests, 3) if stats.requests else None,
                "ttft_ms": _short(latency_summary(stats.times["ttft"])),
                "itl_ms": _short(latency_summary(stats.times["itl"])),
            })  # fmt: skip
        c = self.counts
        return {
            "turns_per_session": self.turns,
            "think_time_ms": self.think_ns / 1e6,
            "arrival": arrival,
            "later_turns_from": "the previous turn's done instant + think time (a closed loop per session)",
            "started": c.started,
            "completed": c.completed,
            "cut_by_stop": c.cut_by_stop,
            "ended_by_failure": c.ended_by_failure,
            "turns_measured": sum(t["requests"] for t in per_turn),
            "per_turn": per_turn,
        }


def _short(summary: dict) -> dict:
    """A latency summary without its distribution (the scenario's classes carry the full ones)."""
    return {key: summary.get(key) for key in ("count", "p50", "p90", "p99", "max")}


def session_lines(doc) -> list[str]:
    """The console's lines for scenarios that ran sessions: counts, and TTFT p50 turn by turn."""
    lines = []
    for scenario in doc["scenarios"]:
        sessions = scenario.get("sessions")
        if not sessions:
            continue
        turns = sessions["per_turn"]
        ttft = " / ".join("-" if t["ttft_ms"]["p50"] is None else f"{t['ttft_ms']['p50']:.1f}" for t in turns)
        inputs = " / ".join(f"{t['input_tokens_mean'] or 0:.0f}" for t in turns)
        lines.append(
            f"{scenario['scenario']} sessions ({sessions['arrival']}, {sessions['turns_per_session']} turns, think "
            f"{sessions['think_time_ms']:g} ms): {sessions['started']} started, {sessions['completed']} complete, "
            f"{sessions['cut_by_stop']} cut by the stop, {sessions['ended_by_failure']} ended by a failure; by turn: "
            f"TTFT p50 {ttft} ms, input tokens {inputs}"
        )
    return ["", *lines] if lines else []
