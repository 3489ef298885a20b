"""A histogram reduced to its non-empty buckets, for holding many of them (one per second of a long run).

A decoded interval histogram of the recorder's layout is 270 KB (33,792 counters); read back a second at a time,
a one-hour run's log held 1.9 GB for one metric of one class. ``Compact`` keeps each non-empty bucket's lowest and
highest equivalent value and count (a second at 80/s: ~70 buckets, ~1.7 KB of arrays, measured on a search
step's log) and answers what the interval log's readers ask (count, percentile, max, mean) exactly as
HdrHistogram does on the full histogram.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from hdrh.histogram import HdrHistogram

from tailmark.client.verdict import bucket_bounds


class Compact(NamedTuple):
    lows: np.ndarray  # each non-empty bucket's lowest equivalent value (ns), in value order
    highs: np.ndarray  # its highest equivalent value (the upper edge tailmark reads values as)
    counts: np.ndarray

    @classmethod
    def of(cls, histogram: HdrHistogram) -> Compact:
        return cls(*bucket_bounds(histogram))

    @classmethod
    def empty(cls) -> Compact:
        nothing = np.zeros(0, np.int64)
        return cls(nothing, nothing, nothing)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def value_at_percentile(self, percentile: float) -> int:
        """HdrHistogram's ``get_value_at_percentile``: the upper edge of the bucket holding the rank
        round(p/100 n), at least 1; 0 when empty."""
        n = self.count
        if not n:
            return 0
        rank = max(int(percentile / 100.0 * n + 0.5), 1)
        return int(self.highs[min(int(np.searchsorted(np.cumsum(self.counts), rank)), len(self.highs) - 1)])

    def max_value(self) -> int:
        """HdrHistogram's ``get_max_value``: the highest equivalent value of the largest recorded."""
        return int(self.highs[-1]) if len(self.highs) else 0

    def mean_value(self) -> float:
        """HdrHistogram's ``get_mean_value``: each bucket counted at its median equivalent value."""
        n = self.count
        if not n:
            return 0.0
        middles = self.lows + ((self.highs - self.lows + 1) >> 1)
        return float((middles * self.counts).sum() / n)

    @staticmethod
    def merged(parts: Sequence[Compact]) -> Compact:
        """Histograms of one layout added: the counts of equal buckets summed."""
        parts = [p for p in parts if len(p.counts)]
        if not parts:
            return Compact.empty()
        if len(parts) == 1:
            return parts[0]
        lows = np.concatenate([p.lows for p in parts])
        unique, position = np.unique(lows, return_inverse=True)
        highs = np.empty(len(unique), np.int64)
        highs[position] = np.concatenate([p.highs for p in parts])
        counts = np.bincount(position, weights=np.concatenate([p.counts for p in parts]), minlength=len(unique))
        return Compact(unique, highs, counts.astype(np.int64))
