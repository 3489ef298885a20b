"""``tailmark compare A B``: what changed between two runs, and whether each change is more than noise.

Per scenario and traffic class, for the achieved rate and each reported percentile of intended → done: A's
value, B's, the difference and whether it is **significant**:

- **two single runs**: significant when the two 95 % intervals do not overlap. Percentiles use their
  distribution-free intervals (client/intervals.py, widened by the correlation of each run's seconds,
  client/batch_means.py; a side a run is too short to bound is open, so it never separates); the rate uses
  the Poisson interval of its count, ``(n ± 1.96 √n) / duration``. Two 95 % intervals
  that do not overlap is a conservative test (well under 5 % false alarms).
- **two sets of repeats** (``tailmark run --repeat K``): the values are the medians over the repeats, and the
  test is an exact two-sided Mann-Whitney rank test over the repeats' values at 5 % (every split of the pooled
  values enumerated, ties at mid-ranks; no scipy). With fewer than 4 repeats on each side no difference can reach
  5 %, and the table says so. This tests run-to-run variation, which is what a rebuilt endpoint on a shared host
  is judged against; the intervals of single runs know nothing of it.
- one side repeated and the other not: no test ("-").

Separate runs of the same scenarios count as one set of repeats when given as a comma-separated list
(``tailmark compare a1,a2,a3,a4 b1,b2,b3,b4``).

The runs must have run the same scenarios in the same order; otherwise the comparison is refused in one line.
Settings that differ between them (seeds aside) are listed under the table: a comparison at two loads is
still shown, but it says so.
"""

from __future__ import annotations

import html
import itertools
import math
import statistics
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tailmark.client.errors import TailmarkError
from tailmark.client.repeat import PERCENTILE_KEYS
from tailmark.client.results import ResultsDoc, ScenarioDoc, write_atomic

ALPHA = 0.05
_EXACT_LIMIT = 200_000  # splits enumerated; above it, the normal approximation of U
_METRICS = ("rate/s", *(f"p{k[1:].replace('_', '.')} ms" for k in PERCENTILE_KEYS))


class CompareError(TailmarkError):
    """Two runs that cannot be compared: different scenarios, or nothing to compare."""


@dataclass(frozen=True, slots=True)
class Row:
    """One number of one (scenario, class) in both runs."""

    scenario: str
    traffic_class: str
    metric: str  # "rate/s", "p50 ms", ..., "p99.9 ms"
    a: float | None
    b: float | None
    significant: bool | None  # None: no test possible
    test: str  # "intervals", "mann-whitney p=0.029", or why there is no test

    @property
    def difference(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def change_pct(self) -> float | None:
        diff = self.difference
        return None if diff is None or not self.a else 100.0 * diff / self.a


@dataclass(frozen=True, slots=True)
class Comparison:
    names: tuple[str, str]
    repeats: tuple[int, int]  # repeats per side (1: a single run)
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = field(default=())


# --- the rank test ---


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test of ``a`` against ``b``: exact (all splits) when feasible."""
    pooled = [*a, *b]
    ranks = _midranks(pooled)
    n_a, n = len(a), len(pooled)
    if not n_a or n_a == n:
        return 1.0
    mean = n_a * (n + 1) / 2.0  # of the rank sum of a
    observed = abs(sum(ranks[:n_a]) - mean)
    if math.comb(n, n_a) <= _EXACT_LIMIT:
        total = extreme = 0
        for chosen in itertools.combinations(ranks, n_a):
            total += 1
            extreme += abs(sum(chosen) - mean) >= observed - 1e-9
        return extreme / total
    n_b = n - n_a
    sd = math.sqrt(n_a * n_b * (n + 1) / 12.0)
    return math.erfc(max(observed - 0.5, 0.0) / sd / math.sqrt(2.0)) if sd else 1.0


def _midranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


# --- grouping runs ---


def _groups(doc: ResultsDoc) -> tuple[list[str], list[list[ScenarioDoc]]]:
    """The scenario list of one repeat, and each scenario's runs (one per repeat; one in all without --repeat)."""
    scenarios = doc["scenarios"]
    repeats = doc.get("repeats")
    per = repeats["scenarios_per_repeat"] if repeats else len(scenarios)  # type: ignore[index]
    per = max(min(per, len(scenarios)), 1)
    groups = [scenarios[j::per] for j in range(min(per, len(scenarios)))]
    return [g[0]["scenario"] for g in groups], groups


def _value(s: ScenarioDoc, traffic_class: str, metric: str) -> float | None:
    c = s["classes"][traffic_class]
    if metric == "rate/s":
        return c["achieved_rate_qps"]
    return c["latency_ms"]["intended_to_done"][_key(metric)]  # type: ignore[literal-required]


def _key(metric: str) -> str:
    return "p" + metric[1:-3].replace(".", "_")


def _interval(s: ScenarioDoc, traffic_class: str, metric: str) -> tuple[float | None, float | None]:
    c = s["classes"][traffic_class]
    if metric == "rate/s":
        n, duration = c["ok_count"], c["duration_s"]
        if duration <= 0:
            return None, None
        half = 1.96 * math.sqrt(n)
        return (n - half) / duration, (n + half) / duration
    intervals = c.get("intervals")
    if not intervals:
        return None, None
    lo, hi = intervals["latency_ms"]["intended_to_done"][_key(metric)]
    return lo, hi


def _apart(x: tuple[float | None, float | None], y: tuple[float | None, float | None]) -> bool:
    """Two intervals that do not overlap (an open side overlaps everything beyond it)."""
    return (x[1] is not None and y[0] is not None and x[1] < y[0]) or (
        y[1] is not None and x[0] is not None and y[1] < x[0]
    )


def as_repeats(docs: Sequence[ResultsDoc], names: Sequence[str]) -> ResultsDoc:
    """Several separate runs of the same scenarios as one set of repeats (``tailmark compare a1,a2,a3 b1,b2,b3``)."""
    if len(docs) == 1:
        return docs[0]
    lists = [[s["scenario"] for s in doc["scenarios"]] for doc in docs]
    for doc, name, scenarios in zip(docs, names, lists, strict=True):
        if doc.get("repeats"):
            raise CompareError(f"{name} was made with --repeat; give it on its own, not in a list of runs")
        if scenarios != lists[0]:
            raise CompareError(f"{names[0]} ran {', '.join(lists[0])}; {name} ran {', '.join(scenarios)}: "
                               "a set of repeats needs the same scenarios")  # fmt: skip
    scenarios = [s for doc in docs for s in doc["scenarios"]]
    repeats = {"count": len(docs), "scenarios_per_repeat": len(lists[0]), "summary": []}
    return typing.cast(ResultsDoc, {**docs[0], "scenarios": scenarios, "repeats": repeats})


def compare_runs(a: ResultsDoc, b: ResultsDoc, *, names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Every (scenario, class, metric) of both runs with its difference and significance."""
    list_a, groups_a = _groups(a)
    list_b, groups_b = _groups(b)
    if not list_a or not list_b:
        raise CompareError(f"{names[0] if not list_a else names[1]} holds no finished scenario")
    if list_a != list_b:
        raise CompareError(
            f"{names[0]} ran {', '.join(list_a)}; {names[1]} ran {', '.join(list_b)}: compare needs the same scenarios"
        )
    rows: list[Row] = []
    notes: list[str] = []
    reps = (max(len(g) for g in groups_a), max(len(g) for g in groups_b))
    if min(reps) > 1 and math.comb(reps[0] + reps[1], reps[0]) < 2 / ALPHA:
        notes.append(
            f"{reps[0]} vs {reps[1]} repeats: no rank test can reach {100 * ALPHA:g} %; repeat at least 4 times"
        )
    for name, runs_a, runs_b in zip(list_a, groups_a, groups_b, strict=True):
        differ = _settings_differ(runs_a[0], runs_b[0])
        if differ:
            notes.append(f"{name}: settings differ ({differ}): the runs offered different loads or rules")
        classes_a, classes_b = runs_a[0]["classes"], runs_b[0]["classes"]
        common = [c for c in classes_a if c in classes_b]
        if len(common) == 2 and len(classes_a) == len(classes_b) == 2:
            common = common[:1]  # a lone named class is "all" again, as in the report
        others = sorted(set(classes_a) ^ set(classes_b))
        if others:
            notes.append(f"{name}: classes in one run only, not compared: {', '.join(others)}")
        for traffic_class in common:
            for metric in _METRICS:
                rows.append(_row(name, traffic_class, metric, runs_a, runs_b))
    return Comparison(names=names, repeats=reps, rows=tuple(rows), notes=tuple(notes))


_OWN_SEEDS = ("schedule_seed", "sample_seed")  # fresh in every repeat; not a difference between the runs


def _settings_differ(a: ScenarioDoc, b: ScenarioDoc) -> str:
    """``key A vs B`` for each effective setting that differs, seeds aside; a setting one run does not record (an
    older results.json) is unknown there, not different."""
    ea, eb = a["settings"]["effective"], b["settings"]["effective"]
    keys = [k for k in ea if k not in _OWN_SEEDS and k in eb and ea[k] != eb[k]]
    return ", ".join(f"{k} {ea.get(k)} vs {eb.get(k)}" for k in keys)


def _row(name: str, traffic_class: str, metric: str, runs_a: list[ScenarioDoc], runs_b: list[ScenarioDoc]) -> Row:
    values_a = [v for s in runs_a if (v := _value(s, traffic_class, metric)) is not None]
    values_b = [v for s in runs_b if (v := _value(s, traffic_class, metric)) is not None]
    a = statistics.median(values_a) if values_a else None
    b = statistics.median(values_b) if values_b else None
    if a is None or b is None:
        return Row(name, traffic_class, metric, a, b, None, "no value")
    if len(runs_a) == 1 and len(runs_b) == 1:
        x, y = _interval(runs_a[0], traffic_class, metric), _interval(runs_b[0], traffic_class, metric)
        if x == (None, None) or y == (None, None):
            return Row(name, traffic_class, metric, a, b, None, "no intervals")
        return Row(name, traffic_class, metric, a, b, _apart(x, y), "intervals")
    if len(values_a) > 1 and len(values_b) > 1:
        p = mann_whitney(values_a, values_b)
        return Row(name, traffic_class, metric, a, b, p < ALPHA, f"mann-whitney p={p:.3g}")
    return Row(name, traffic_class, metric, a, b, None, "one side not repeated")


# --- output ---

_HEADER = ("scenario", "class", "metric", "A", "B", "B-A", "change", "significant", "test")


def _cells(row: Row) -> tuple[str, ...]:
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}" if "ms" in row.metric else f"{v:.1f}"

    change = row.change_pct
    significant = "-" if row.significant is None else "YES" if row.significant else "no"
    return (row.scenario, row.traffic_class, row.metric, num(row.a), num(row.b), num(row.difference),
            "-" if change is None else f"{change:+.1f} %", significant, row.test)  # fmt: skip


def compare_table(comparison: Comparison) -> str:
    """The console table, then which run is A and B and any notes."""
    table = [_HEADER, *(_cells(r) for r in comparison.rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADER))]
    left = {0, 1, 2, 7, 8}
    lines = [
        "  ".join(
            v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    a, b = comparison.names
    ra, rb = comparison.repeats
    lines += ["", f"A: {a} ({ra} repeat{'s' * (ra > 1)})", f"B: {b} ({rb} repeat{'s' * (rb > 1)})"]
    lines += [f"note: {n}" for n in comparison.notes]
    return "\n".join(lines) + "\n"


def compare_html(comparison: Comparison) -> str:
    esc = html.escape
    css = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}.t{text-align:left}"
        "tr.sig td{background:#fff3c4;font-weight:bold}"
    )
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tailmark compare</title><style>{css}</style>"]
    a, b = comparison.names
    parts.append(f"<body><h1>tailmark compare</h1><p>A: {esc(a)} ({comparison.repeats[0]} repeat(s))<br>")
    parts.append(f"B: {esc(b)} ({comparison.repeats[1]} repeat(s))</p><table><tr>")
    parts.append("".join(f"<th class='{'t' if i < 3 else ''}'>{esc(h)}</th>" for i, h in enumerate(_HEADER)) + "</tr>")
    for row in comparison.rows:
        cells = _cells(row)
        tds = "".join(f"<td class='{'t' if i in (0, 1, 2, 8) else ''}'>{esc(v)}</td>" for i, v in enumerate(cells))
        parts.append(f"<tr class='{'sig' if row.significant else ''}'>{tds}</tr>")
    parts.append("</table>")
    if comparison.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in comparison.notes) + "</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_compare_html(comparison: Comparison, path: str | Path) -> None:
    write_atomic(path, compare_html(comparison))
