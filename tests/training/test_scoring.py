from __future__ import annotations

import pytest

from tailmark.training.scoring import olympic_mean, score_runs


def test_olympic_mean_drops_fastest_and_slowest():
    assert olympic_mean([5.0, 1.0, 3.0, 100.0, 4.0]) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        olympic_mean([1.0, 2.0])


def test_one_run_that_did_not_converge_is_dropped_as_slowest():
    score = score_runs([10.0, None, 12.0, 11.0, 13.0])
    assert score.valid and score.converged == 4
    assert score.seconds == pytest.approx(12.0)  # 11, 12, 13 after dropping 10 and the failed run
    assert score.minutes == pytest.approx(0.2)


def test_two_runs_that_did_not_converge_invalidate_the_set():
    score = score_runs([10.0, None, 12.0, None, 13.0])
    assert not score.valid and score.seconds is None and "2 runs did not converge" in score.reason


def test_fewer_than_three_runs_is_a_mean_marked_invalid():
    score = score_runs([2.0, 4.0])
    assert not score.valid and score.seconds == pytest.approx(3.0) and "at least 3" in score.reason
