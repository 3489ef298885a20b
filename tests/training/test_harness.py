"""MLPerf's timing rules on the real smoke workload, and the stock compliance checker's verdict on the logs."""

from __future__ import annotations

import pytest

from tailmark.training.checker import check_log
from tailmark.training.context import RunContext
from tailmark.training.harness import InitTooLong, Submission, run_once
from tailmark.training.logparse import parse_result, read_lines
from tailmark.training.mlperf_log import RunLog
from tailmark.training.workload import DataSizes, Trainer

SUBMISSION = Submission(system="testbox")


class OrderedLog(RunLog):
    """A RunLog that also records the order of its keys into a shared list."""

    def __init__(self, path, order):
        super().__init__(path)
        self.order = order

    def event(self, key, value=None, metadata=None):
        self.order.append(key)
        super().event(key, value, metadata)

    start = end = event


class ProbeTrainer(Trainer):
    """The smoke trainer, noting when the data set is first touched."""

    def __init__(self, inner, order):
        self.inner, self.order = inner, order

    def load_data(self) -> DataSizes:
        self.order.append("DATA TOUCHED")
        return self.inner.load_data()

    def train_epoch(self, epoch):
        self.inner.train_epoch(epoch)

    def evaluate(self):
        return self.inner.evaluate()

    def state_dict(self):
        return self.inner.state_dict()


def test_converged_run_passes_the_stock_checker(smoke, tmp_path):
    log_path = tmp_path / "result_0.txt"
    with RunLog(log_path) as log:
        outcome, _ = run_once(smoke, RunContext(seed=3), log, submission=SUBMISSION)
    assert outcome.converged and outcome.accuracy >= smoke.spec.target
    # the clock stops at the first evaluation at or above the target
    assert all(point.accuracy < smoke.spec.target for point in outcome.evals[:-1])
    verdict = check_log(log_path, smoke.spec.benchmark)
    assert verdict.passed, verdict.output
    logged = parse_result(log_path)
    assert logged.status == "success" and logged.epochs_to_converge == outcome.epochs
    assert logged.seed == 3 and logged.benchmark == "digits_cnn"
    # the log's run_stop - run_start and the harness's own clock agree to within a few milliseconds
    assert logged.time_to_train_s == pytest.approx(outcome.time_to_train_s, abs=0.02)


def test_run_stopped_short_fails_the_stock_checker(smoke, tmp_path):
    log_path = tmp_path / "result_0.txt"
    with RunLog(log_path) as log:
        outcome, _ = run_once(smoke, RunContext(seed=3), log, submission=SUBMISSION, max_epochs=1)
    assert outcome.status == "aborted" and outcome.epochs == 1
    verdict = check_log(log_path, smoke.spec.benchmark)
    assert not verdict.passed
    assert "eval_accuracy" in verdict.output and "status" in verdict.output


def test_checker_rejects_a_log_without_init_stop(smoke, tmp_path):
    log_path = tmp_path / "result_0.txt"
    with RunLog(log_path) as log:
        run_once(smoke, RunContext(seed=3), log, submission=SUBMISSION)
    lines = [line for line in log_path.read_text().splitlines() if '"init_stop"' not in line]
    log_path.write_text("\n".join(lines) + "\n")
    verdict = check_log(log_path, smoke.spec.benchmark)
    assert not verdict.passed and "init_stop" in verdict.output


def test_clock_starts_before_the_data_is_touched(smoke, tmp_path):
    order: list[str] = []

    class Probed(type(smoke)):
        def build(self, ctx):
            order.append("BUILD")
            return ProbeTrainer(super().build(ctx), order)

    with OrderedLog(tmp_path / "result_0.txt", order) as log:
        run_once(Probed(smoke.hparams), RunContext(seed=5), log, submission=SUBMISSION)
    at = order.index
    assert at("cache_clear") < at("init_start") < at("seed") < at("BUILD") < at("init_stop") < at("run_start")
    assert at("run_start") < at("DATA TOUCHED") < at("epoch_start") < at("eval_accuracy") < at("run_stop")
    assert order.count("seed") == 1 and order[-1] == "run_stop"


def test_eval_cadence_and_epoch_numbering(smoke, tmp_path):
    log_path = tmp_path / "result_0.txt"
    with RunLog(log_path) as log:
        run_once(smoke, RunContext(seed=4), log, submission=SUBMISSION, max_epochs=3)
    records = read_lines(log_path)
    epochs = [r["metadata"]["epoch_num"] for r in records if r["key"] == "epoch_start"]
    evals = [r["metadata"]["epoch_num"] for r in records if r["key"] == "eval_accuracy"]
    assert epochs[0] == 1 and epochs == list(range(1, len(epochs) + 1))
    assert evals == [e for e in epochs if e % smoke.spec.eval_every_epochs == 0]


def test_initialisation_over_its_cap_is_refused(smoke, tmp_path):
    with RunLog(tmp_path / "result_0.txt") as log, pytest.raises(InitTooLong):
        run_once(smoke, RunContext(seed=1), log, submission=SUBMISSION, init_cap_s=0.0)


def test_disabled_log_writes_nothing(smoke, tmp_path):
    log_path = tmp_path / "rank1.txt"
    with RunLog(log_path, enabled=False) as log:
        run_once(smoke, RunContext(seed=1), log, submission=SUBMISSION, max_epochs=1)
    assert not log_path.exists()
