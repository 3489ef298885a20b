"""The console's token table for generative runs: one row per scenario and class that recorded tokens.

TTFT is from the intended send (``TTFT sent``: from the send, so the difference is the client's own
queueing), ITL every gap, TPOT per request; all in ms, LoadGen's rank rule. Nothing is printed for runs
without token timings.
"""

from __future__ import annotations

HEADER = ("scenario", "class", "requests", "TTFT p50", "TTFT p99", "TTFT sent p99", "ITL p50", "ITL p99",
          "TPOT p50", "TPOT p99", "out tok/s", "in/out tok", "goodput", "tokens from")  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def token_rows(doc) -> list[tuple[str, ...]]:
    rows = []
    for index, scenario in enumerate(doc["scenarios"]):
        label = scenario["scenario"] if scenario.get("repeat") is None else f"{scenario['scenario']}#{index + 1}"
        single = len(scenario["classes"]) == 2  # "all" and one class: show the class only
        for name, c in scenario["classes"].items():
            tokens = c.get("tokens")
            if not tokens or (single and name == "all"):
                continue
            lat = tokens["latency_ms"]
            good = tokens.get("goodput")
            sources = "+".join(sorted(tokens["token_source"]["output"])) or "-"
            rate = tokens["output_tokens_per_s"]
            rows.append((
                label, name, str(tokens["requests"]), _ms(lat["ttft"]["p50"]), _ms(lat["ttft"]["p99"]),
                _ms(lat["ttft_sent"]["p99"]), _ms(lat["itl"]["p50"]), _ms(lat["itl"]["p99"]), _ms(lat["tpot"]["p50"]),
                _ms(lat["tpot"]["p99"]), "-" if rate is None else f"{rate:.1f}",
                f"{tokens['input_tokens']['mean'] or 0:.0f}/{tokens['output_tokens']['mean'] or 0:.0f}",
                "-" if not good or good["share"] is None else f"{100 * good['share']:.1f} %", sources,
            ))  # fmt: skip
    return rows


def token_lines(doc) -> list[str]:
    """The table's lines (with a blank line before), or [] when no class recorded tokens."""
    rows = token_rows(doc)
    if not rows:
        return []
    table = [HEADER, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    left = {0, 1, len(HEADER) - 1}
    lines = [
        "  ".join(
            v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return ["", "token latencies (ms; TTFT from the intended send, TTFT sent from the send):", *lines]


# summary.csv: a few token columns per class (empty for classes without token timings)
TOKEN_CSV_COLUMNS = [
    "ttft_p50_ms", "ttft_p99_ms", "ttft_sent_p99_ms", "itl_p50_ms", "itl_p99_ms", "tpot_p50_ms", "tpot_p99_ms",
    "output_tokens_per_s", "input_tokens_mean", "output_tokens_mean", "token_goodput_share", "token_source",
]  # fmt: skip


def token_csv_row(c) -> dict:
    tokens = c.get("tokens")
    if not tokens:
        return {}
    lat = tokens["latency_ms"]
    good = tokens.get("goodput") or {}
    row = {f"{name}_{stat}_ms": lat[name][stat] for name in ("ttft", "itl", "tpot") for stat in ("p50", "p99")}
    row["ttft_sent_p99_ms"] = lat["ttft_sent"]["p99"]
    row.update(
        output_tokens_per_s=tokens["output_tokens_per_s"], input_tokens_mean=tokens["input_tokens"]["mean"],
        output_tokens_mean=tokens["output_tokens"]["mean"], token_goodput_share=good.get("share"),
        token_source="+".join(sorted(tokens["token_source"]["output"])),
    )  # fmt: skip
    return row


def token_table_html(doc) -> str:
    """The token table for report.html ("" without token timings)."""
    import html

    rows = token_rows(doc)
    if not rows:
        return ""
    head = "".join(f"<th class='{'t' if i < 2 else ''}'>{html.escape(h)}</th>" for i, h in enumerate(HEADER))
    body = "".join(
        "<tr>" + "".join(f"<td class='{'t' if i < 2 else ''}'>{html.escape(v)}</td>" for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return (
        "<h3>Token latencies</h3><table><tr>" + head + "</tr>" + body + "</table><p class='legend'>ms; TTFT from the "
        "intended send, TTFT sent from the send (the difference is the client's own queueing); ITL every gap; TPOT "
        "per request, the first token excluded (docs/generative.md)</p>"
    )
