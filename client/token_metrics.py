"""Token-level measurement of generative answers, per (scenario, traffic class), from the intended send time.

For each completed request the dispatcher hands over its instants (intended, sent, done) and its
``Generation`` (client/generation.py: the arrival stamp of every chunk that carried text, and the token
counts). Recorded, in nanosecond HDR histograms (hlog's type, read with LoadGen's rank rule like every other
latency here):

    ttft          first text chunk - intended   the headline: the client's own queueing is inside it
    ttft_sent     first text chunk - sent       what a tool that stamps at its send reports
    ttst          second chunk - first chunk    time to second token (AIPerf's definition)
    itl           every gap between consecutive text chunks, all requests together
    tpot          per request: (last chunk - first chunk) / (output tokens - 1); the first token excluded
    e2e           done - intended

plus histograms of the input and output tokens served per request, and each request's output tokens/s
(output tokens / (done - sent), in milli-tokens/s so the integer histogram keeps three digits). Requests whose
answer had no text (or one chunk) add nothing to ttft/ttst/itl/tpot; they are counted. A non-streamed answer's
text all arrives at ``done``: its TTFT is its end-to-end latency and it has no gaps.

For goodput each request also keeps (ttft, tpot, e2e) in a compact array, so any per-request SLO can be
judged afterwards (``good_count``). Recording only appends to lists; ``flush`` moves them into the
histograms with numpy, and a key flushes itself every ``FLUSH_EVERY`` requests.
"""

from __future__ import annotations

import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client import hlog
from tailmark.client.generation import TOKENIZER_NAME, Generation

TIME_METRICS = ("ttft", "ttft_sent", "ttst", "itl", "tpot", "e2e")
COUNT_METRICS = ("input_tokens", "output_tokens", "output_milli_tokens_per_s")
FLUSH_EVERY = 4096  # requests buffered per key before record() flushes that key
NONE = -1  # in the per-request array: no value (no text, or fewer than two chunks)


def _histograms(names: Iterable[str]) -> dict[str, HdrHistogram]:
    return {name: hlog.new_histogram() for name in names}


@dataclass(eq=False)
class TokenStats:
    """Everything recorded for one key (or the sum of several: ``merged``)."""

    times: dict[str, HdrHistogram] = field(default_factory=lambda: _histograms(TIME_METRICS))
    counts: dict[str, HdrHistogram] = field(default_factory=lambda: _histograms(COUNT_METRICS))
    requests: int = 0
    streamed: int = 0
    without_text: int = 0  # answers that carried no text at all
    input_tokens: int = 0
    output_tokens: int = 0
    output_source: Counter[str] = field(default_factory=Counter)  # "usage" / "counted" -> requests
    input_source: Counter[str] = field(default_factory=Counter)
    prefix: Counter[str] = field(default_factory=Counter)  # "shared" / "unique" prompts (prefix workload only)
    per_request: array.array = field(default_factory=lambda: array.array("q"))  # ttft, tpot, e2e per request
    _rows: list[int] = field(default_factory=list)  # pending: ttft, ttft_sent, ttst, tpot, e2e, in, out, mtps
    _gaps: list[int] = field(default_factory=list)  # pending inter-chunk gaps

    def record(self, intended_ns: int, sent_ns: int, done_ns: int, generation: Generation) -> None:
        stamps = generation.chunk_ns
        out_tokens = generation.output_tokens
        in_tokens = generation.input_tokens_served
        self.requests += 1
        self.streamed += generation.streamed
        self.output_tokens += out_tokens
        self.input_tokens += in_tokens
        self.output_source[generation.token_source] += 1
        self.input_source["usage" if generation.input_tokens is not None else "counted"] += 1
        ttft = ttft_sent = ttst = tpot = NONE
        if stamps:
            first = stamps[0]
            ttft, ttft_sent = first - intended_ns, first - sent_ns
            if len(stamps) > 1:
                ttst = stamps[1] - first
                self._gaps += [b - a for a, b in pairwise(stamps)]
                if out_tokens > 1:
                    tpot = (stamps[-1] - first) // (out_tokens - 1)
            elif out_tokens > 1 and generation.streamed:
                tpot = 0  # every token in one chunk: none came after the first
        else:
            self.without_text += 1
        span = max(done_ns - sent_ns, 1)
        milli_tps = out_tokens * 1_000_000_000_000 // span
        self._rows += (ttft, ttft_sent, ttst, tpot, done_ns - intended_ns, in_tokens, out_tokens, milli_tps)
        self.per_request.extend((ttft, tpot, done_ns - intended_ns))
        if len(self._rows) >= 8 * FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self._gaps:
            _record(self.times["itl"], np.array(self._gaps, dtype=np.int64))
            self._gaps.clear()
        if not self._rows:
            return
        rows = np.array(self._rows, dtype=np.int64).reshape(-1, 8)
        self._rows.clear()
        for column, name in enumerate(("ttft", "ttft_sent", "ttst", "tpot", "e2e")):
            _record(self.times[name], rows[:, column])
        for column, name in zip((5, 6, 7), COUNT_METRICS, strict=True):
            _record(self.counts[name], rows[:, column])

    def good_count(self, ttft_ns: int = 0, tpot_ns: int = 0, e2e_ns: int = 0) -> int:
        """Requests meeting every SLO given (0: none on that metric). A request without a first token misses a
        TTFT SLO; one with fewer than two tokens has no TPOT and meets a TPOT SLO (as vLLM's goodput counts)."""
        rows = np.frombuffer(self.per_request, dtype=np.int64).reshape(-1, 3)
        good = np.ones(len(rows), dtype=bool)
        if ttft_ns:
            good &= (rows[:, 0] != NONE) & (rows[:, 0] <= ttft_ns)
        if tpot_ns:
            good &= rows[:, 1] <= tpot_ns  # NONE (-1) passes
        if e2e_ns:
            good &= rows[:, 2] <= e2e_ns
        return int(good.sum())

    def histogram(self, name: str) -> HdrHistogram:
        self.flush()
        return self.times[name] if name in self.times else self.counts[name]


def _record(histogram: HdrHistogram, values: np.ndarray) -> None:
    values = values[values != NONE]
    if len(values):
        hlog.record_bulk((histogram,), np.clip(values, 0, hlog.HIGHEST_NS))


def merged(stats: Iterable[TokenStats]) -> TokenStats:
    """One TokenStats holding the sum of several (a scenario's classes, for "all")."""
    total = TokenStats()
    for part in stats:
        part.flush()
        for name in TIME_METRICS:
            hlog.add_into(total.times[name], part.times[name])
        for name in COUNT_METRICS:
            hlog.add_into(total.counts[name], part.counts[name])
        total.requests += part.requests
        total.streamed += part.streamed
        total.without_text += part.without_text
        total.input_tokens += part.input_tokens
        total.output_tokens += part.output_tokens
        total.output_source.update(part.output_source)
        total.input_source.update(part.input_source)
        total.prefix.update(part.prefix)
        total.per_request.extend(part.per_request)
    return total


class TokenRecorder:
    """``TokenStats`` per (scenario, traffic class); the dispatcher calls ``record`` for each measured answer."""

    def __init__(self, prefix_of=None) -> None:
        """``prefix_of(body)``: the shared prefix a request body starts with (-1: none; None: not counted),
        from the prompt pool of a shared-prefix workload (client/prefix_workload.py)."""
        self._stats: dict[tuple[str, str], TokenStats] = {}
        self.prefix_of = prefix_of

    def record(self, key: tuple[str, str], intended_ns: int, sent_ns: int, done_ns: int, answer) -> None:
        if not isinstance(answer, Generation):
            return
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = TokenStats()
        stats.record(intended_ns, sent_ns, done_ns, answer)
        if self.prefix_of is not None and (prefix := self.prefix_of(answer.request)) is not None:
            stats.prefix["shared" if prefix >= 0 else "unique"] += 1

    def all(self) -> dict[tuple[str, str], TokenStats]:
        return dict(self._stats)

    def stats(self, key: tuple[str, str]) -> TokenStats | None:
        stats = self._stats.get(key)
        if stats is not None:
            stats.flush()
        return stats


def _counts_summary(histogram: HdrHistogram, scale: float = 1.0) -> dict[str, float | int | None]:
    """count, mean, p50, p99, min and max of a histogram of counts (vectorised: hdrh's own mean walks every
    bucket in Python, ~2 s for this range)."""
    from tailmark.client.verdict import bucket_bounds, percentile_ns

    lows, highs, counts = bucket_bounds(histogram)
    n = int(counts.sum())
    if not n:
        return {"count": 0, "mean": None, "p50": None, "p99": None, "min": None, "max": None}
    mean = float(np.dot(counts, (lows + highs) / 2)) / n
    return {
        "count": n,
        "mean": round(mean / scale, 3),
        "p50": round(percentile_ns(histogram, 50.0) / scale, 3),
        "p99": round(percentile_ns(histogram, 99.0) / scale, 3),
        "min": round(int(lows[0]) / scale, 3),
        "max": round(int(highs[-1]) / scale, 3),
    }


def tokens_doc(stats: TokenStats, *, duration_s: float, failed: int, slos_ms: dict[str, float]) -> dict:
    """The ``tokens`` object of a class in results.json (docs/generative.md, "Client and metrics")."""
    from tailmark.client.results import latency_summary

    stats.flush()
    from tailmark.client.goodput import token_goodput

    goodput = None
    given = {name: ms for name, ms in slos_ms.items() if ms}
    if given:
        good = stats.good_count(**{f"{name}_ns": round(ms * 1e6) for name, ms in given.items()})
        goodput = token_goodput(given, good, failed, stats.requests, duration_s)
    return {
        "requests": stats.requests,
        "streamed": stats.streamed,
        "without_text": stats.without_text,
        "tokenizer": TOKENIZER_NAME,
        "token_source": {"output": dict(stats.output_source), "input": dict(stats.input_source)},
        "input_tokens_total": stats.input_tokens,
        "output_tokens_total": stats.output_tokens,
        "output_tokens_per_s": round(stats.output_tokens / duration_s, 3) if duration_s > 0 else None,
        "input_tokens": _counts_summary(stats.counts["input_tokens"]),
        "output_tokens": _counts_summary(stats.counts["output_tokens"]),
        "output_tokens_per_s_per_request": _counts_summary(stats.counts["output_milli_tokens_per_s"], 1000.0),
        "latency_ms": {name: latency_summary(stats.times[name]) for name in TIME_METRICS},
        "goodput": goodput,
        "prefix_reuse": _prefix_doc(stats.prefix),
    }


def _prefix_doc(prefix: Counter[str]) -> dict | None:
    """How many answered requests started with a shared prefix, of those counted (None: no prefix workload)."""
    counted = prefix["shared"] + prefix["unique"]
    if not counted:
        return None
    return {"shared": prefix["shared"], "unique": prefix["unique"], "share": round(prefix["shared"] / counted, 6)}
