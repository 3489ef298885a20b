"""Each generator's statistics match its parameters within stated tolerances (seeded, so not flaky).

Tolerances are about 4 standard errors of the estimate at the sample sizes used.
"""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

from tailmark.traces import generators as g
from tailmark.traces.transforms import limit


def _times(it, n: int) -> np.ndarray:
    return np.array([a.offset_ns for a in itertools.islice(it, n)], dtype=np.float64) / 1e9


def _rate_cv(times: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(times)
    return 1.0 / gaps.mean(), gaps.std() / gaps.mean()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_poisson_rate_and_cv(seed):
    rate, cv = _rate_cv(_times(g.poisson(200.0, seed=seed), 40_000))
    assert rate == pytest.approx(200.0, rel=0.02)  # se 0.5 %
    assert cv == pytest.approx(1.0, abs=0.03)
    gaps = np.diff(_times(g.poisson(200.0, seed=seed), 40_000))
    # memoryless: P(gap > mean) = e^-1
    assert np.mean(gaps > 1 / 200) == pytest.approx(np.exp(-1), abs=0.01)


def test_fixed_interval_is_exact_and_starts_at_zero():
    offsets = [a.offset_ns for a in itertools.islice(g.fixed_interval(3.0), 4)]
    assert offsets == [0, 333_333_333, 666_666_666, 1_000_000_000]  # floor(k * 1e9 / rate), never accumulated


@pytest.mark.parametrize(
    "make", [lambda: g.poisson(300.0, seed=4), lambda: g.gamma(300.0, 0.5, seed=4), lambda: g.batch(300.0, "fixed:2")]
)
def test_renewal_processes_start_at_zero_in_whole_nanoseconds(make):
    """LoadGen's Server rule: the first arrival at the start, then one gap after another (never a gap first)."""
    offsets = [a.offset_ns for a in itertools.islice(make(), 3 * g.BLOCK)]
    assert offsets[0] == 0
    assert all(type(o) is int for o in offsets[:5])
    assert all(b >= a for a, b in itertools.pairwise(offsets))


def test_examples_in_docstrings():
    result = doctest.testmod(g)
    assert result.attempted >= 2
    assert result.failed == 0


@pytest.mark.parametrize(("burstiness", "cv_tol"), [(0.25, 0.12), (1.0, 0.03), (4.0, 0.02)])
def test_gamma_cv_is_one_over_sqrt_burstiness(burstiness, cv_tol):
    rate, cv = _rate_cv(_times(g.gamma(100.0, burstiness, seed=5), 40_000))
    assert rate == pytest.approx(100.0, rel=0.05)
    assert cv == pytest.approx(1 / np.sqrt(burstiness), abs=cv_tol)


@pytest.mark.parametrize(
    ("spec", "mean"), [("geometric:4", 4.0), ("uniform:1:7", 4.0), ("fixed:8", 8.0), ("1:0.5,4:0.3,8:0.2", 3.3)]
)
def test_batch_sizes_mean_and_event_rate(spec, mean):
    arrivals = list(itertools.islice(g.batch(50.0, spec, seed=7), 20_000))
    sizes = np.array([a.batch_size for a in arrivals])
    assert g.BatchSizes.parse(spec).mean == pytest.approx(mean)
    assert sizes.mean() == pytest.approx(mean, rel=0.04)
    assert sizes.min() >= 1
    rate, _ = _rate_cv(np.array([a.offset_ns for a in arrivals]) / 1e9)
    assert rate == pytest.approx(50.0, rel=0.03)


def test_batch_split_sends_a_batch_as_simultaneous_requests():
    arrivals = list(itertools.islice(g.batch(10.0, "fixed:3", split=True, seed=1), 30))
    assert all(a.batch_size == 1 for a in arrivals)
    groups = [len(list(grp)) for _, grp in itertools.groupby(a.offset_ns for a in arrivals)]
    assert groups == [3] * 10


def test_onoff_mean_rate_and_burstiness():
    on, off, m_on, m_off = 100.0, 5.0, 1.0, 3.0
    times = _times(g.onoff(on, off, m_on, m_off, seed=11), 150_000)
    rate, cv = _rate_cv(times)
    expected = (on * m_on + off * m_off) / (m_on + m_off)  # 28.75/s
    assert rate == pytest.approx(expected, rel=0.08)  # ~1300 on/off cycles
    assert cv > 1.5  # far burstier than Poisson


def test_diurnal_follows_the_sine():
    period = 10.0
    times = _times(limit(g.diurnal(200.0, 0.8, period, seed=3), duration_s=100 * period), 10**7)
    rate = len(times) / (100 * period)
    assert rate == pytest.approx(200.0, rel=0.01)
    phase = (times % period) / period
    peak = np.mean((phase > 0.2) & (phase < 0.3))  # around sin = 1
    trough = np.mean((phase > 0.7) & (phase < 0.8))  # around sin = -1
    # mean of sin over each band is ±(cos 0.4π - cos 0.6π) / 0.2π ≈ ±0.9836
    band = (np.cos(0.4 * np.pi) - np.cos(0.6 * np.pi)) / (0.2 * np.pi)
    assert peak / trough == pytest.approx((1 + 0.8 * band) / (1 - 0.8 * band), rel=0.1)


@pytest.mark.parametrize("shape", ["linear", "exponential"])
def test_ramp_counts_follow_the_rate_then_hold(shape):
    start, end, ramp_s = 10.0, 1000.0, 20.0
    times = _times(limit(g.ramp(start, end, ramp_s, shape=shape, seed=2), duration_s=30.0), 10**7)
    first_s = np.sum(times < 1.0)
    last_s = np.sum((times >= 19.0) & (times < 20.0))
    held = np.sum((times >= 20.0) & (times < 30.0)) / 10
    if shape == "linear":
        total = (start + end) / 2 * ramp_s
        assert first_s == pytest.approx(start + (end - start) / 40, abs=15)
    else:
        total = ramp_s * (end - start) / np.log(end / start)
        assert first_s == pytest.approx(start * ((end / start) ** (1 / 20) - 1) * 20 / np.log(end / start), abs=15)
    assert np.sum(times < ramp_s) == pytest.approx(total, rel=0.04)
    assert last_s > 0.9 * end * (0.97 if shape == "linear" else 0.8)
    assert held == pytest.approx(end, rel=0.03)


def test_same_seed_same_trace_other_seed_other_trace():
    def take(seed):
        return [a.offset_ns for a in itertools.islice(g.onoff(50, 5, 1, 1, seed=seed), 500)]

    assert take(4) == take(4)
    assert take(4) != take(5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: g.poisson(0),
        lambda: g.fixed_interval(-1),
        lambda: g.gamma(10, 0),
        lambda: g.batch(10, "fixed:0"),
        lambda: g.batch(10, "uniform:5:2"),
        lambda: g.batch(10, "1:0,2:0"),
        lambda: g.onoff(10, -1, 1, 1),
        lambda: g.diurnal(10, 1.5),
        lambda: g.ramp(1, 10, 5, shape="cubic"),
    ],
)
def test_bad_parameters_are_refused_at_call_time(make):
    with pytest.raises(ValueError):
        make()  # before any arrival is drawn
