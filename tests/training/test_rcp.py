"""MLPerf's reference-convergence-point check, pinned to the worked example in the training rules."""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from tailmark.training.rcp import RCP_DIR, ReferencePoints, check, min_acceptable_mean, reference_for
from tailmark.training.workloads import workload_class

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


# the result JSON of the sets whose converged runs are a benchmark's shipped points, in the order they were added
RECORDED = RCP_DIR / "sets"


def recorded_sets(benchmark: str) -> list[dict]:
    paths = sorted(RECORDED.glob(f"{benchmark}_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [json.loads(p.read_text()) for p in paths]


def test_translation_points_are_its_recorded_reference_sets_and_each_later_set_was_checked():
    cls = workload_class("translation")
    spec, defaults = cls.spec, dataclasses.asdict(cls.default_hparams())
    reference = reference_for(spec.benchmark)
    assert reference is not None and reference.global_batch_size == defaults["global_batch_size"]
    sets = recorded_sets(spec.benchmark)
    assert len(sets) >= 2
    points: list[int] = []
    for recorded in sets:
        # reference runs: the workload's own hyperparameters and target, fresh seeds, one process
        assert recorded["settings"]["hparams"] == defaults and recorded["settings"]["seed"] is None
        assert recorded["target"] == spec.target and recorded["division"] == "closed"
        converged = [r["epochs"] for r in recorded["runs"] if r["status"] == "success"]
        if recorded.get("rcp"):
            # the harness checked this set against the points added before it; the same check gives the same verdict
            earlier = dataclasses.replace(reference, epochs_to_converge=tuple(points))
            verdict = check(earlier, converged, recorded["runs_planned"])
            assert verdict.message == recorded["rcp"]["message"] and verdict.passed == recorded["rcp"]["passed"]
        points += converged
    assert reference.epochs_to_converge == tuple(points)


def test_rcp_from_rebuilds_the_points_from_recorded_sets(cli, tmp_path):
    benchmark = workload_class("translation").spec.benchmark
    paths = sorted(RECORDED.glob(f"{benchmark}_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    args = [a for path in paths for a in ("--rcp-from", str(path))]
    done = cli("train", "translation", *args, "--write-rcp", "rcp.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rebuilt = ReferencePoints.load(tmp_path / "rcp.json")
    assert rebuilt.epochs_to_converge == reference_for(benchmark).epochs_to_converge
    assert rebuilt.command.startswith("tailmark train translation --runs ")
    assert "points added with --rcp-from" in rebuilt.command
    assert f"({len(rebuilt.epochs_to_converge)} runs)" in done.stdout


def test_rcp_from_refuses_sets_that_are_not_reference_runs(cli, tmp_path):
    benchmark = workload_class("translation").spec.benchmark
    path = sorted(RECORDED.glob(f"{benchmark}_*.json"))[0]
    recorded = json.loads(path.read_text())
    seeded = tmp_path / "seeded.json"
    seeded.write_text(json.dumps({**recorded, "settings": {**recorded["settings"], "seed": 3}}))
    for args, expected in [
        (("translation", "--rcp-from", str(seeded), "--write-rcp", "x.json"), "reference runs draw fresh seeds"),
        (("translation", "--set", "max_chars=12", "--rcp-from", str(path), "--write-rcp", "x.json"), "(max_chars)"),
        (("lm", "--rcp-from", str(path), "--write-rcp", "x.json"), f"a {benchmark} set, not tiny_lm_pystdlib"),
        (("translation", "--rcp-from", str(path)), "--write-rcp JSON or --append-rcp JSON"),
        (("translation", "--rcp-from", "nothing.json", "--write-rcp", "x.json"), "cannot read a result"),
    ]:
        done = cli("train", *args, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr, done.stderr
    assert not (tmp_path / "x.json").exists()
