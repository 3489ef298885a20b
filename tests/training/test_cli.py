"""``tailmark train`` end to end, in a fresh process as a user runs it, on the smoke workload."""

from __future__ import annotations

import json

import pytest
import torch

from tailmark.models.digits_cnn import DigitsCNN
from tailmark.training.checker import check_log
from tailmark.training.workloads.smoke import digits_file, load_split


def test_three_runs_give_an_olympic_score_and_mlperf_layout(cli, tmp_path):
    args = ("--runs", "3", "--threads", "1", "--system", "box", "--output", "out", "--append-rcp", "rcp.json")
    done = cli("train", "smoke", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "reference convergence points: rcp.json (3 runs)" in done.stdout
    # console progress: epochs and accuracy while training, then one line per run and the score
    assert "smoke run 1/3: epoch 1/30 top1 0." in done.stdout
    assert "run 3/3: converged at epoch" in done.stdout and "olympic mean of 3 runs" in done.stdout

    result = json.loads((tmp_path / "out" / "digits_cnn.json").read_text())
    assert result["schema"] == "tailmark.train/1" and result["division"] == "closed"
    assert result["score"]["valid"] and result["score"]["converged"] == 3
    runs = result["runs"]
    times = sorted(r["time_to_train_s"] for r in runs)
    assert result["score"]["seconds"] == times[1]  # olympic mean of three = the middle run
    assert len({r["seed"] for r in runs}) == 3  # a fresh seed per run
    # checked against the shipped reference convergence points (training/rcps/digits_cnn.json)
    assert result["rcp"]["reference_mean"] > 0 and result["rcp"]["message"].startswith("RCP test")
    for index, run in enumerate(runs):
        log = tmp_path / "out" / "results" / "box" / "digits_cnn" / f"result_{index}.txt"
        assert run["log"].endswith(str(log.relative_to(tmp_path))) and log.is_file()
        assert run["compliance"] == "SUCCESS" and check_log(log, "digits_cnn").passed
        assert run["wall_s"] > run["time_to_train_s"] > 0 and run["cpu_s"] > 0
        assert len(run["loadavg_start"]) == 3 and len(run["loadavg_end"]) == 3

    # --append-rcp created the file from this set's epochs, with the command that reproduces it
    points = json.loads((tmp_path / "rcp.json").read_text())
    assert points["epochs_to_converge"] == [r["epochs"] for r in runs] and points["global_batch_size"] == 64
    assert points["command"] == "tailmark train smoke --runs 3 --nproc 1 --threads 1 --append-rcp rcp.json"

    # the converged weights are a plain state_dict that loads with weights_only=True and meets the target
    state = torch.load(tmp_path / runs[0]["model"], weights_only=True)
    model = DigitsCNN()
    model.load_state_dict(state)
    model.eval()
    _, _, x, y = load_split(digits_file())
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(runs[0]["accuracy"], abs=1e-6) and accuracy >= 0.98


def test_a_run_capped_below_convergence_is_reported_and_fails_the_checker(cli, tmp_path):
    done = cli(
        "train", "smoke", "--runs", "1", "--max-epochs", "1", "--seed", "3", "--threads", "1",
        "--system", "box", "--output", "out", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "did NOT converge in 1 epochs" in done.stdout
    result = json.loads((tmp_path / "out" / "digits_cnn.json").read_text())
    assert result["division"] == "open"  # a fixed seed is not allowed in the closed division
    assert result["runs"][0]["status"] == "aborted" and result["runs"][0]["compliance"] == "FAILED"
    assert not check_log(tmp_path / "out" / "results" / "box" / "digits_cnn" / "result_0.txt", "digits_cnn").passed


def test_user_errors_are_one_line(cli, tmp_path):
    for args, expected in [
        (("--runs", "0"), "--runs=0 requested; must be >= 1"),
        (("--set", "nosuch=1"), "unknown hyperparameter 'nosuch'"),
        (("--set", "learning_rate=fast"), "must be a float"),
        (("--nproc", "3"), "does not divide the global batch size 64"),
    ]:
        done = cli("train", "smoke", *args, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.strip() == f"tailmark train: {done.stderr.strip().split(': ', 1)[1]}"
        assert expected in done.stderr and "Traceback" not in done.stderr


def test_append_rcp_adds_a_set_to_the_same_benchmark_and_batch_only(tmp_path):
    from tailmark.cli import UsageError
    from tailmark.training.cli import write_reference
    from tailmark.training.rcp import ReferencePoints
    from tailmark.training.results import RunRecord, TrainResult

    def result(*epochs: int) -> TrainResult:
        runs = [
            RunRecord(i, "log", "success", e, 0.99, 1.0, i, 2.0, 2.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0)
            for i, e in enumerate(epochs)
        ]
        return TrainResult("smoke", "digits_cnn", "top1", 0.98, "box", "closed", 1, len(runs), {}, runs=runs)

    path = tmp_path / "rcp.json"
    assert write_reference(result(4, 5, 6), path, 64, command="tailmark train A", append=True) == 3
    assert write_reference(result(3, 4), path, 64, command="tailmark train B", append=True) == 5
    points = ReferencePoints.load(path)
    assert points.epochs_to_converge == (4, 5, 6, 3, 4) and points.command == "tailmark train A; tailmark train B"
    with pytest.raises(UsageError, match="holds digits_cnn at global batch 64, not digits_cnn at 32"):
        write_reference(result(4, 4, 4), path, 32, command="tailmark train C", append=True)
    assert write_reference(result(4, 4, 4), path, 64, command="tailmark train D") == 3  # --write-rcp replaces
