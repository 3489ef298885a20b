"""What an SLO asks, parsed: "a share f of the requests within T" (``Objective``), from ``--slo p99=50ms``
(a percentile of intended -> done), or ``--goodput 0.99 --request-slo 100ms`` (goodput: failures count as
misses), and the durations and shares those flags take. Bad text is refused in one line
(``argparse.ArgumentTypeError``). ``tailmark search`` and traffic classes' ``slo`` read them.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

_SLO = re.compile(r"^\s*p(\d+(?:\.\d+)?)\s*(?:=|<=|<)\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s)?\s*$", re.IGNORECASE)
_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True, slots=True)
class Objective:
    """A share of the requests within a latency: ``percentile`` % of them at most ``bound_ms`` (intended -> done)."""

    percentile: float  # 99.0: p99
    bound_ms: float
    goodput: bool = False  # failed requests count as misses (a percentile leaves them out; errors fail a trial)

    @property
    def name(self) -> str:
        if self.goodput:
            return f"goodput>={self.percentile / 100:g}@{self.bound_ms:g}ms"
        return f"p{self.percentile:g}<={self.bound_ms:g}ms"


def parse_slo(text: str) -> Objective:
    """``p99=50ms``, ``p99.9<=0.2s``, ``p50=10`` (ms); refused in one line otherwise."""
    match = _SLO.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected pPERCENTILE=BOUND, e.g. p99=50ms (units us, ms, s)")
    percentile = float(match[1])
    bound_ms = float(match[2]) * _TO_MS[(match[3] or "ms").lower()]
    if not 0.0 < percentile < 100.0:
        raise argparse.ArgumentTypeError(f"{text!r}: the percentile must be between 0 and 100 (exclusive)")
    if bound_ms <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the bound must be > 0")
    return Objective(percentile, bound_ms)


def parse_duration_ms(text: str) -> float:
    """``100ms``, ``0.1s``, ``100`` (ms), > 0."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration > 0, e.g. 100ms or 0.1s")
    return float(match[1]) * _TO_MS[(match[2] or "ms").lower()]


def parse_share(text: str) -> float:
    """``0.99`` or ``99%``: a share strictly between 0 and 1."""
    try:
        value = float(text[:-1]) / 100.0 if text.strip().endswith("%") else float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share between 0 and 1 (exclusive), e.g. 0.99 or 99%")
    return value
