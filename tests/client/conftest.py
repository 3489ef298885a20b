"""Shared checks for the client tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

# every percentile a report might ask for, plus a fine sweep of the body
PERCENTILES = sorted({*np.linspace(0.0, 100.0, 201).tolist(), 99.9, 99.99, 99.999, 99.9999})


def _assert_same_histogram(a: HdrHistogram, b: HdrHistogram) -> None:
    assert a.get_total_count() == b.get_total_count()
    assert a.get_min_value() == b.get_min_value()
    assert a.get_max_value() == b.get_max_value()
    assert np.array_equal(np.ctypeslib.as_array(a.counts), np.ctypeslib.as_array(b.counts))
    assert a.get_percentile_to_value_dict(PERCENTILES) == b.get_percentile_to_value_dict(PERCENTILES)


@pytest.fixture
def assert_same_histogram() -> Callable[[HdrHistogram, HdrHistogram], None]:
    """Count, min, max, every bucket and every percentile equal."""
    return _assert_same_histogram
