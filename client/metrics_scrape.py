"""The endpoint's Prometheus ``/metrics`` scraped during each scenario, beside the latencies.

A ``Scraper`` runs on its own thread (urllib GET, lines filtered to the kept series, then parsed with
``prometheus_client``'s text parser), so the event loop that issues requests never waits for a scrape. It scrapes
once when the scenario starts (before its first request), every ``interval_s`` while it runs, and once when it
stops (after its last answer): a counter's increase from the first scrape to the last is every request of the
scenario, warm-up included, as the server's ModelStatistics difference is.

Kept by default: Triton's queue time, successes, pending requests and GPU utilisation (``DEFAULT_SERIES``);
``--metrics-series REGEX`` keeps more (the regex must match a sample's whole name, as PromQL's do).

Example::

    >>> scraper = Scraper(ScrapeSettings("http://127.0.0.1:8002/metrics"))   # doctest: +SKIP
    >>> await scraper.start(); ...; await scraper.stop()                    # doctest: +SKIP
    >>> series_doc(scraper.samples, window_start_ns, duration_s)             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

FILE_NAME = "metrics.json"
FORMAT = "tailmark.metrics/1"
DEFAULT_SERIES = (
    "nv_inference_queue_duration_us",
    "nv_inference_request_success",
    "nv_inference_pending_request_count",
    "nv_gpu_utilization",
)
_CUMULATIVE_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
NS = 1_000_000_000


class MetricsUnavailable(ImportError):
    """prometheus-client (the text-format parser) is not installed."""


def parser():
    """``prometheus_client``'s text parser, or ``MetricsUnavailable`` with the line to print."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise MetricsUnavailable("server metrics need prometheus-client: pip install prometheus-client") from None
    return text_string_to_metric_families


@dataclass(frozen=True, slots=True)
class ScrapeSettings:
    url: str
    interval_s: float = 1.0
    extra_series: str | None = None  # a regex over whole sample names, kept besides DEFAULT_SERIES
    unreachable: str | None = None  # why the run goes without metrics (checked once before the first scenario)

    @property
    def keep(self) -> re.Pattern[str]:
        names = "|".join(DEFAULT_SERIES) + (f"|(?:{self.extra_series})" if self.extra_series else "")
        return re.compile(f"(?:{names})")


@dataclass
class Scrape:
    at_ns: int  # perf_counter_ns at the request's midpoint
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Scraper:
    """One scenario's scrapes; ``start`` and ``stop`` are awaited around its window, the rest is a thread."""

    settings: ScrapeSettings
    samples: list[Scrape] = field(default_factory=list)
    cumulative: set[str] = field(default_factory=set)  # names of counters (rates are taken of these)
    failed: int = 0
    error: str | None = None  # the last failure
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def start(self) -> None:
        if self.settings.unreachable:
            self.error = self.settings.unreachable
            return
        await asyncio.to_thread(self.scrape_once)
        self._thread = threading.Thread(target=self._loop, name="metrics-scrape", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self.scrape_once)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            self.scrape_once()

    def scrape_once(self) -> None:
        """One GET and parse; a failure is counted and kept, never raised."""
        begin = time.perf_counter_ns()
        try:
            text = fetch(self.settings.url, timeout_s=max(2.0 * self.settings.interval_s, 1.0))
        except OSError as exc:
            self.failed += 1
            self.error = describe(exc)
            return
        at_ns = (begin + time.perf_counter_ns()) // 2
        try:
            values = parse(text, self.settings.keep, self.cumulative)
        except ValueError as exc:
            self.failed += 1
            self.error = f"not Prometheus text: {exc}"
            return
        self.samples.append(Scrape(at_ns, values))


def fetch(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # http(s) only: cli.py refuses other schemes
        return response.read().decode("utf-8", errors="replace")


def describe(exc: OSError) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    return str(getattr(reason, "strerror", None) or reason)


def check(url: str, timeout_s: float = 3.0) -> str | None:
    """None when ``url`` answers with Prometheus text; else why not, in a few words."""
    try:
        parse(fetch(url, timeout_s), re.compile(".*"), set())
    except OSError as exc:
        return describe(exc)
    except ValueError as exc:
        return f"not Prometheus text: {exc}"
    return None


def parse(text: str, keep: re.Pattern[str], cumulative: set[str]) -> dict[tuple[str, tuple], float]:
    """Samples whose name ``keep`` matches, keyed by (name, sorted labels); counter names go into ``cumulative``."""
    lines, exposed = [], set()
    for line in text.splitlines():
        if line.startswith("#"):
            words = line.split(None, 3)
            if len(words) >= 3 and words[1] in ("TYPE", "HELP") and _kept(keep, words[2]):
                lines.append(line)
        elif line.strip():
            name = re.split(r"[{\s]", line, maxsplit=1)[0]
            if _kept(keep, name):  # only kept lines reach the parser: a big exposition costs little to read
                lines.append(line)
                exposed.add(name)
    values = {}
    for family in parser()("\n".join(lines) + "\n"):
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and name not in exposed and family.name in exposed:
                name = family.name  # the parser names every counter sample *_total; keep the exposed name
            if not keep.fullmatch(name):
                continue
            if family.type == "counter" or (family.type != "gauge" and name.endswith(_CUMULATIVE_SUFFIXES)):
                cumulative.add(name)
            values[(name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return values


def _kept(keep: re.Pattern[str], name: str) -> bool:
    """A family's lines stay when any of its sample names could match (histograms add suffixes)."""
    return any(keep.fullmatch(name + suffix) for suffix in ("", *_CUMULATIVE_SUFFIXES))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def series_doc(scraper: Scraper, start_ns: int, duration_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the time series for metrics.json, the summary for results.json) of one scenario.

    Times are seconds from the measured window's start (negative: warm-up). Counters also as rates per second
    between consecutive scrapes (None after a reset). The summary gives each series' first, last, min, max and
    mean over the window's scrapes (all of them when none fell inside), and for counters the increase from the
    first scrape to the last (the whole scenario) and the mean rate over the window (its values at the window's
    start and end read linearly between the scrapes either side).
    """
    t_s = [round((s.at_ns - start_ns) / NS, 4) for s in scraper.samples]
    keys = sorted({k for s in scraper.samples for k in s.values})
    inside = [i for i, t in enumerate(t_s) if 0.0 <= t <= duration_s] or list(range(len(t_s)))
    in_window = set(inside)
    series, summary = [], []
    for name, labels in keys:
        values = [_finite(s.values.get((name, labels))) for s in scraper.samples]
        counter = name in scraper.cumulative
        entry: dict[str, Any] = {"name": name, "labels": dict(labels), "kind": "counter" if counter else "gauge"}
        entry["values"] = values
        seen = [v for i, v in enumerate(values) if v is not None and i in in_window]
        facts: dict[str, Any] = {**{k: entry[k] for k in ("name", "labels", "kind")}}
        facts.update(first=_first(values), last=_first(values[::-1]), min=min(seen, default=None),
                     max=max(seen, default=None), mean=sum(seen) / len(seen) if seen else None)  # fmt: skip
        facts["increase"] = facts["rate_per_s"] = None
        if counter:
            entry["rate_per_s"] = _rates(t_s, values)
            if facts["first"] is not None and facts["last"] is not None:
                facts["increase"] = facts["last"] - facts["first"]
            begin, end = _at(t_s, values, 0.0), _at(t_s, values, duration_s)
            if begin is not None and end is not None and end >= begin and duration_s > 0:
                facts["rate_per_s"] = (end - begin) / duration_s
        series.append(entry)
        summary.append(facts)
    doc = {"t_s": t_s, "window_s": [0.0, round(duration_s, 4)], "series": series}
    facts_doc = {
        "url": scraper.settings.url, "interval_s": scraper.settings.interval_s, "scrapes": len(scraper.samples),
        "failed_scrapes": scraper.failed, "error": scraper.error, "series": summary,
    }  # fmt: skip
    return doc, facts_doc


def _at(t_s: list[float], values: list[float | None], at: float) -> float | None:
    """A counter's value at ``at`` s, linear between the scrapes either side; None unless scrapes bracket it."""
    known = [(t, v) for t, v in zip(t_s, values, strict=True) if v is not None]
    for (t0, v0), (t1, v1) in itertools.pairwise(known):
        if t0 <= at <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (at - t0) / (t1 - t0)
    return None


def _first(values: list[float | None]) -> float | None:
    return next((v for v in values if v is not None), None)


def _rates(t_s: list[float], values: list[float | None]) -> list[float | None]:
    out: list[float | None] = [None]
    for i in range(1, len(values)):
        a, b, dt = values[i - 1], values[i], t_s[i] - t_s[i - 1]
        out.append(None if a is None or b is None or b < a or dt <= 0 else round((b - a) / dt, 6))
    return out
