"""``--nproc 2``: each run under torchrun with DistributedDataParallel (gloo on CPU), logging on rank 0 only."""

from __future__ import annotations

import json

from tailmark.training.checker import check_log
from tailmark.training.logparse import read_lines


def test_two_processes_converge_with_one_log(cli, tmp_path):
    args = ("--runs", "1", "--nproc", "2", "--threads", "1", "--system", "box", "--output", "out")
    done = cli("train", "smoke", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "digits_cnn.json").read_text())
    run = result["runs"][0]
    assert result["nproc"] == 2 and run["status"] == "success" and run["compliance"] == "SUCCESS"

    log = tmp_path / "out" / "results" / "box" / "digits_cnn" / "result_0.txt"
    assert check_log(log, "digits_cnn").passed
    keys = [record["key"] for record in read_lines(log)]
    # rank 1 wrote nothing: one seed, one run_start, one evaluation per epoch
    assert keys.count("seed") == 1 and keys.count("run_start") == 1 and keys.count("run_stop") == 1
    assert keys.count("eval_accuracy") == keys.count("epoch_start") == run["epochs"]
    assert {r["value"] for r in read_lines(log) if r["key"] == "global_batch_size"} == {64}
    # progress printed once per evaluation, by rank 0 only
    assert done.stdout.count("smoke run 1/1: epoch 1/") == 1
    # the CPU time of both ranks is counted
    assert run["cpu_s"] > 0
