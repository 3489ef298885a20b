"""The lm workload: its corpus (CPython 3.11's standard library, pinned), its fixed split, and `tailmark train lm`
at the test size reaching its target with logs the stock MLPerf checker accepts. The full size takes minutes: timed
by hand (training/README.md)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from tailmark.models.tiny_lm import decode, encode
from tailmark.server.config import parse_config
from tailmark.training.checker import check_log
from tailmark.training.context import RunContext
from tailmark.training.workload import DataMissing, with_overrides
from tailmark.training.workloads import workload_class
from tailmark.training.workloads.lm import SIZES
from tailmark.training.workloads.lm.corpus import DIR_ENV, corpus_dir, manifest, read_corpus, split_names
from tailmark.training.workloads.lm.export import complete, load_exported

HELD_OUT = [
    "__future__.py", "_pydecimal.py", "bisect.py", "copyreg.py", "genericpath.py", "imghdr.py",
    "nntplib.py", "poplib.py", "sched.py", "sre_constants.py", "telnetlib.py", "webbrowser.py",
]  # fmt: skip


def lm(**overrides: str):
    workload, _ = with_overrides(workload_class("lm"), overrides)
    return workload


def test_the_split_is_fixed_by_file_name_and_disjoint():
    names = list(manifest())
    assert len(names) == 114 and names == sorted(names)
    train, held = split_names(names)
    assert held == HELD_OUT
    assert set(train).isdisjoint(held) and sorted(train + held) == names
    assert split_names(names) == (train, held)  # a function of the names alone


def test_the_installed_corpus_matches_its_pins_and_reads_the_same_twice():
    workload = lm()
    workload.verify_data()  # every module present and byte-identical to the pinned sha256
    first, second = read_corpus(corpus_dir()), read_corpus(corpus_dir())
    assert first == second and list(first.held_out_files) == HELD_OUT
    assert len(first.held_out) == 365_418 and len(first.train) > 1_800_000
    assert first.train.startswith((corpus_dir() / first.train_files[0]).read_bytes())


def test_held_out_windows_are_the_same_for_every_seed_and_training_batches_follow_it():
    workload = lm(size="test")
    trainers = [workload.build(RunContext(seed=s)) for s in (1, 1, 2)]
    for trainer in trainers:
        trainer.load_data()
    assert all(torch.equal(t.eval_windows, trainers[0].eval_windows) for t in trainers)
    context = SIZES["test"].context
    assert trainers[0].eval_windows.shape == (SIZES["test"].eval_windows, context + 1)
    # one short epoch each: same seed, same weights after it; another seed, other weights
    for trainer in trainers:
        trainer.size = dataclasses.replace(trainer.size, steps_per_epoch=2)
        trainer.train_epoch(1)
    same, other = (list(t.model.parameters()) for t in trainers[1:])
    assert all(torch.equal(a, b) for a, b in zip(trainers[0].model.parameters(), same, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(trainers[0].model.parameters(), other, strict=True))
    score = trainers[0].evaluate()
    assert 0.0 <= score < SIZES["test"].spec.target


def test_each_size_is_its_own_benchmark_and_the_size_moves_a_run_to_open():
    full, closed = with_overrides(workload_class("lm"), {"learning_rate": "1e-3"})
    assert closed and full.spec.benchmark == "tiny_lm_pystdlib" and full.spec.target == 0.50
    test, closed = with_overrides(workload_class("lm"), {"size": "test"})
    assert not closed and test.spec.benchmark == "tiny_lm_pystdlib_test" and test.spec.target == 0.35
    assert workload_class("lm").spec == full.spec  # the class's spec is the benchmark's
    with pytest.raises(ValueError, match="size='huge'; known sizes: full, test"):
        with_overrides(workload_class("lm"), {"size": "huge"})


def test_the_test_size_reaches_its_target_and_its_log_passes_the_checker(cli, tmp_path):
    args = ("--set", "size=test", "--runs", "1", "--threads", "1", "--system", "box", "--output", "out")
    args += ("--export-to", "repo")
    done = cli("train", "lm", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # a converged run has a time (one run is no valid olympic score)
    assert "run 1/1: converged at epoch" in done.stdout and "checker SUCCESS" in done.stdout
    result = json.loads((tmp_path / "out" / "tiny_lm_pystdlib_test.json").read_text())
    assert result["division"] == "open" and result["target"] == 0.35 and result["metric"] == "next_byte_acc"
    (run,) = result["runs"]
    assert run["status"] == "success" and run["accuracy"] >= 0.35 and run["compliance"] == "SUCCESS"
    # checked with the t-test against the test size's shipped reference points (training/rcps/)
    assert result["rcp"]["message"].startswith("RCP test") and "tiny_lm_pystdlib_test" in result["rcp"]["message"]
    log = tmp_path / "out" / "results" / "box" / "tiny_lm_pystdlib_test" / "result_0.txt"
    verdict = check_log(log, "tiny_lm_pystdlib_test")
    assert verdict.passed, verdict.output
    # the same log does not pass as the full benchmark: its name and target are the test size's
    assert not check_log(log, "tiny_lm_pystdlib").passed

    # the saved weights score what the log says on the held-out windows, and decode the same with a KV cache
    workload = lm(size="test")
    trainer = workload.build(RunContext(seed=0))
    trainer.load_data()
    trainer.model.load_state_dict(torch.load(tmp_path / run["model"], weights_only=True))
    assert trainer.evaluate() == pytest.approx(run["accuracy"], abs=1e-9)
    prompt = "def __init__(self, "  # 19 bytes and 12 new fit the test size's context of 32
    model = trainer.model.eval()
    reference = model.greedy_decode(encode(prompt), 12)
    assert model.greedy_decode_cached(encode(prompt), 12) == reference

    # --export-to put it in a model repository: a decoupled tiny_lm config the server's parser reads, and the
    # weights, which load back into the same model and complete the prompt with the same tokens
    assert result["served"]["name"] == "tiny_lm_pystdlib_test" and result["served"]["run_index"] == 0
    model_dir = tmp_path / "repo" / "tiny_lm_pystdlib_test"
    config = parse_config((model_dir / "config.pbtxt").read_text())
    assert config.backend == "tiny_lm" and config.model_transaction_policy.decoupled
    assert config.parameters["context"].string_value == "32"
    exported = load_exported(model_dir)
    assert complete(exported, prompt, 12) == complete(exported, prompt, 12, cached=False) == decode(reference)


def test_a_missing_or_changed_corpus_is_one_clear_error(cli, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli("train", "lm", "--runs", "1", cwd=tmp_path, env={DIR_ENV: str(empty)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "apt-get install libpython3.11-stdlib" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    monkeypatch.setenv(DIR_ENV, str(empty))
    with pytest.raises(DataMissing, match=r"apt-get install libpython3\.11-stdlib"):
        corpus_dir()
    monkeypatch.delenv(DIR_ENV)

    changed = tmp_path / "changed"
    shutil.copytree(corpus_dir(), changed, ignore=lambda _d, names: [n for n in names if n not in manifest()])
    with (changed / "heapq.py").open("a") as f:
        f.write("# edited\n")
    done = cli("train", "lm", "--runs", "1", cwd=tmp_path, env={DIR_ENV: str(changed)})
    assert done.returncode == 2 and "heapq.py: sha256" in done.stderr and "Traceback" not in done.stderr


def test_export_refuses_weights_of_another_model(cli, tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    done = cli("train", "lm", "--from-weights", "other.pt", "--export-to", "repo", cwd=tmp_path)
    assert done.returncode == 2 and "other.pt: not the tiny_lm_pystdlib model" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "repo" / "tiny_lm_pystdlib").exists()


def test_two_processes_train_the_test_size_with_one_log(cli, tmp_path):
    args = ("--set", "size=test", "--runs", "1", "--nproc", "2", "--threads", "1", "--system", "box", "--output", "out")
    done = cli("train", "lm", *args, "--quiet", "--no-save-model", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "tiny_lm_pystdlib_test.json").read_text())
    (run,) = result["runs"]
    assert result["nproc"] == 2 and run["status"] == "success" and run["compliance"] == "SUCCESS"
    log = (tmp_path / "out" / "results" / "box" / "tiny_lm_pystdlib_test" / "result_0.txt").read_text()
    assert log.count("run_start") == 1  # rank 0 alone writes the log
