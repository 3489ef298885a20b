"""Histograms of given values for tests, in the recorder's own layout (client/hlog.py)."""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

from tailmark.client.hlog import new_histogram


def histogram_of(values_ns: Iterable[float]) -> HdrHistogram:
    """One by one through upstream's record_value, so these tests do not lean on the bulk path they sit beside."""
    histogram = new_histogram()
    for value in values_ns:
        histogram.record_value(int(value))
    return histogram
