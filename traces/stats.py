"""Statistics of an arrival stream in one streaming pass, their text form, and a rate-over-time plot.

Definitions (also in FORMAT.md):

- span: last offset - first offset; mean rate: (count - 1) / span, i.e. 1 / mean inter-arrival gap.
- gap CV: standard deviation / mean of inter-arrival gaps (Poisson 1, fixed interval 0).
- peak 1 s: the most arrivals in any sliding 1-second window, as a rate and as a multiple of the mean.
- idle: the share of 1-second bins (from the first arrival to the last) with no arrival.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tailmark.traces.arrival import Arrival
from tailmark.traces.format import Record

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TraceStats:
    """What ``measure`` found; ``per_second`` holds arrivals per 1-s bin from the first arrival (for plots)."""

    count: int
    span_s: float
    mean_rate_qps: float  # (count - 1) / span; 0 when the span is 0
    gap_cv: float
    peak_1s_qps: int
    peak_over_mean: float
    idle_fraction: float
    mean_batch: float
    classes: dict[str, int]
    mean_input_tokens: float  # over rows that carry tokens; 0: none do
    mean_output_tokens: float
    per_second: array = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("per_second")
        return out


def measure(arrivals: Iterable[Arrival | Record]) -> TraceStats:
    """One pass, O(peak arrivals per second + span in seconds) memory; raises ValueError if empty."""
    count = 0
    first = prev = 0
    gap_mean = gap_m2 = 0.0  # Welford: stable for millions of gaps
    window: deque[int] = deque()
    peak = 0
    per_second = array("q")
    batch_total = 0
    classes: Counter[str] = Counter()
    tok_rows = tok_in = tok_out = 0
    for a in arrivals:
        t = a.offset_ns
        if count == 0:
            first = prev = t
        else:
            gap = (t - prev) / NS
            n_gaps = count  # gaps seen including this one
            delta = gap - gap_mean
            gap_mean += delta / n_gaps
            gap_m2 += delta * (gap - gap_mean)
            prev = t
        count += 1
        window.append(t)
        while window[0] <= t - NS:
            window.popleft()
        peak = max(peak, len(window))
        bin_index = (t - first) // NS
        while len(per_second) <= bin_index:
            per_second.append(0)
        per_second[bin_index] += 1
        batch_total += a.batch_size
        classes[a.traffic_class] += 1
        in_tok, out_tok = getattr(a, "input_tokens", 0), getattr(a, "output_tokens", 0)
        if in_tok or out_tok:
            tok_rows, tok_in, tok_out = tok_rows + 1, tok_in + in_tok, tok_out + out_tok
    if count == 0:
        raise ValueError("no arrivals")
    span = (prev - first) / NS
    rate = (count - 1) / span if span > 0 else 0.0
    gaps = count - 1
    cv = math.sqrt(gap_m2 / gaps) / gap_mean if gaps > 1 and gap_mean > 0 else 0.0
    idle = sum(1 for c in per_second if c == 0) / len(per_second)
    return TraceStats(
        count=count,
        span_s=span,
        mean_rate_qps=rate,
        gap_cv=cv,
        peak_1s_qps=peak,
        peak_over_mean=peak / rate if rate else 0.0,
        idle_fraction=idle,
        mean_batch=batch_total / count,
        classes=dict(sorted(classes.items())),
        mean_input_tokens=tok_in / tok_rows if tok_rows else 0.0,
        mean_output_tokens=tok_out / tok_rows if tok_rows else 0.0,
        per_second=per_second,
    )


def format_stats(stats: TraceStats, name: str = "") -> str:
    """The text ``tailmark trace stats`` prints."""
    lines = [f"trace           {name}"] if name else []
    lines += [
        f"arrivals        {stats.count:,}",
        f"span            {stats.span_s:,.3f} s",
        f"mean rate       {stats.mean_rate_qps:,.3f} /s",
        f"gap CV          {stats.gap_cv:.3f}",
        f"peak 1 s        {stats.peak_1s_qps:,} /s = {stats.peak_over_mean:.2f} x mean",
        f"idle            {100 * stats.idle_fraction:.1f} % of 1-s bins",
        f"mean batch      {stats.mean_batch:.2f}",
    ]
    if len(stats.classes) > 1 or "default" not in stats.classes:
        lines.append("classes         " + ", ".join(f"{k} {v:,}" for k, v in stats.classes.items()))
    if stats.mean_input_tokens or stats.mean_output_tokens:
        lines.append(
            f"tokens          input mean {stats.mean_input_tokens:,.1f}, output mean {stats.mean_output_tokens:,.1f}"
        )
    return "\n".join(lines)


def plot_rate(stats: TraceStats, path: str | Path, *, title: str = "", max_points: int = 600) -> Path:
    """Arrival rate over time as a PNG (bins widened so at most ``max_points``); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    counts = stats.per_second
    width = max(1, math.ceil(len(counts) / max_points))
    xs, ys = [], []
    for start in range(0, len(counts), width):
        chunk = counts[start : start + width]
        xs.append(start)
        ys.append(sum(chunk) / len(chunk))
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    ax.step(xs, ys, where="post", linewidth=0.9, label=f"arrivals/s ({width}-s bins)")
    ax.axhline(
        stats.mean_rate_qps, color="tab:red", linestyle="--", linewidth=0.8, label=f"mean {stats.mean_rate_qps:.2f}/s"
    )
    ax.set_xlabel("time since first arrival (s)")
    ax.set_ylabel("arrivals / s")
    ax.set_ylim(bottom=0)
    ax.set_title(title or "arrival rate", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
