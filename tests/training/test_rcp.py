"""MLPerf's reference-convergence-point check, pinned to the worked example in the training rules."""

from __future__ import annotations

import statistics

import pytest

from tailmark.training.rcp import RCP_DIR, ReferencePoints, check, min_acceptable_mean

RULES_EXAMPLE = (16, 14, 16, 17, 16, 16, 15, 16, 15, 16)


def reference(points=RULES_EXAMPLE, gbs=64):
    return ReferencePoints("digits_cnn", gbs, tuple(points), "test", "test", "2026-01-01")


def test_rules_worked_example():
    # the rules quote mean 15.75, stdev 0.43 (of the olympic-trimmed points), minimum 15.21 epochs for N=5
    trimmed = sorted(RULES_EXAMPLE)[1:-1]
    stdev = statistics.pstdev(trimmed)
    assert reference().mean == pytest.approx(15.75)
    assert stdev == pytest.approx(0.43, abs=0.005)
    assert min_acceptable_mean(15.75, stdev, len(trimmed), 5 - 2) == pytest.approx(15.21, abs=0.005)


def test_check_uses_the_stdev_of_all_points_as_the_mlperf_checker_does():
    verdict = check(reference(), [15, 15, 15, 16, 16], planned_runs=5)
    assert verdict.reference_stdev == pytest.approx(statistics.pstdev(RULES_EXAMPLE))
    assert verdict.passed and verdict.result_mean == pytest.approx(15.333, abs=1e-3)
    assert verdict.norm_factor == pytest.approx(15.75 / verdict.result_mean)
    assert "PASSED" in verdict.message


def test_much_faster_convergence_fails():
    verdict = check(reference(), [12, 12, 13, 12, 12], planned_runs=5)
    assert not verdict.passed and verdict.norm_factor == 1.0 and "FAILED" in verdict.message


def test_slower_convergence_passes_without_normalisation():
    verdict = check(reference(), [17, 18, 17, 18, 19], planned_runs=5)
    assert verdict.passed and verdict.norm_factor == 1.0


def test_round_trip(tmp_path):
    path = tmp_path / "rcp.json"
    reference().save(path)
    assert ReferencePoints.load(path) == reference()


def test_shipped_reference_points_are_at_least_2n_runs():
    files = sorted(RCP_DIR.glob("*.json"))
    assert files, "no reference convergence points shipped"
    for path in files:
        points = ReferencePoints.load(path)
        assert len(points.epochs_to_converge) >= 10, path
        assert path.stem == points.benchmark and points.command.startswith("tailmark train")
