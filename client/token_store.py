"""Token timings on disk (``tokens.json`` beside histograms.json), so ``tailmark merge`` adds them like the rest.

A run with a generative transport writes, per (scenario, traffic class), every ``TokenStats`` histogram as a
base64 HDR encoding (as histograms.json does), its counters, and the per-request (ttft, tpot, e2e) rows that
goodput is judged from (int64, zlib, base64: ~24 bytes a request before compression). Merging sums the
histograms bucket by bucket and concatenates the rows, so a merged run's token percentiles, goodput and
LoadGen LLM verdicts are exactly those of one client that had sent every request.
"""

from __future__ import annotations

import array
import base64
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tailmark.client import hlog
from tailmark.client.errors import TailmarkError
from tailmark.client.token_metrics import COUNT_METRICS, TIME_METRICS, TokenStats, merged

TOKENS_FILE = "tokens.json"
FORMAT = "tailmark-tokens-1"
_COUNTERS = ("requests", "streamed", "without_text", "input_tokens", "output_tokens")
_TALLIES = ("output_source", "input_source", "prefix")

Key = tuple[str, str]


class TokenStoreError(TailmarkError):
    """A tokens.json that cannot be read back."""


def to_dict(stats: Mapping[Key, TokenStats]) -> dict[str, Any]:
    series = []
    for (scenario, traffic_class), s in stats.items():
        s.flush()
        rows = zlib.compress(s.per_request.tobytes(), 1)
        series.append({
            "scenario": scenario,
            "traffic_class": traffic_class,
            "histograms": {name: h.encode().decode("ascii") for name, h in {**s.times, **s.counts}.items()},
            **{name: getattr(s, name) for name in _COUNTERS},
            **{name: dict(getattr(s, name)) for name in _TALLIES},
            "per_request": base64.b64encode(rows).decode("ascii"),
        })  # fmt: skip
    return {"format": FORMAT, "unit": "ns", "series": series}


def from_dict(data: Any, where: str = TOKENS_FILE) -> dict[Key, TokenStats]:
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("series"), list):
        raise TokenStoreError(f"{where}: not a {FORMAT} document")
    out: dict[Key, TokenStats] = {}
    for index, item in enumerate(data["series"]):
        at = f"{where}: series[{index}]"
        try:
            key = (str(item["scenario"]), str(item["traffic_class"]))
            s = TokenStats()
            for name in TIME_METRICS + COUNT_METRICS:
                target = s.times[name] if name in s.times else s.counts[name]
                hlog.add_into(target, hlog.decode(item["histograms"][name]))
            for name in _COUNTERS:
                value = item[name]
                if not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a non-negative integer")
                setattr(s, name, value)
            for name in _TALLIES:
                setattr(s, name, Counter({str(k): int(v) for k, v in item[name].items()}))
            rows = array.array("q")
            rows.frombytes(zlib.decompress(base64.b64decode(item["per_request"], validate=True)))
            if len(rows) % 3:
                raise ValueError("per_request is not whole (ttft, tpot, e2e) rows")
            s.per_request = rows
        except KeyError as exc:
            raise TokenStoreError(f"{at}: no {exc}") from None
        except (TypeError, AttributeError, ValueError, zlib.error) as exc:  # binascii.Error is a ValueError
            raise TokenStoreError(f"{at}: {exc}") from None
        if key in out:
            raise TokenStoreError(f"{at}: {key} appears twice")
        out[key] = s
    return out


def load(run_dir: Path) -> dict[Key, TokenStats] | None:
    """The token timings of a run directory; None when it has none (not a generative run)."""
    path = run_dir / TOKENS_FILE
    if not path.is_file():
        return None
    try:
        return from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError) as exc:
        raise TokenStoreError(f"{path}: {exc}") from None


def merged_by_key(parts: Iterable[Mapping[Key, TokenStats] | None]) -> dict[Key, TokenStats] | None:
    """The parts' stats summed key by key; None when no part has any."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    keys = dict.fromkeys(key for part in present for key in part)
    return {key: merged(part[key] for part in present if key in part) for key in keys}


def write(run_dir: Path, stats: Mapping[Key, TokenStats]) -> None:
    from tailmark.client.results import write_atomic

    write_atomic(run_dir / TOKENS_FILE, json.dumps(to_dict(stats)) + "\n")
