"""The recommendation workload on the real MovieLens-100K from the recbole wheel: the split and one epoch."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tailmark.training.context import RunContext
from tailmark.training.workloads import workload_class
from tailmark.training.workloads.recommendation.data import inter_file, load

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None, reason="needs `pip install --no-deps recbole==1.2.1`"
)


@pytest.fixture(scope="module")
def data():
    return load(inter_file())


def test_leave_one_out_holds_out_each_users_latest_rating(data):
    table = np.loadtxt(inter_file(), delimiter="\t", skiprows=1, dtype=np.int64, usecols=(0, 1, 3))
    assert data.num_users == 943 and data.num_items == 1682
    assert len(data.train_users) == 100_000 - 943
    user_ids, item_ids = np.unique(table[:, 0]), np.unique(table[:, 1])
    for user in (0, 1, 500, 942):
        rows = table[table[:, 0] == user_ids[user]]
        latest = rows[rows[:, 2] == rows[:, 2].max()]
        assert item_ids[data.test_items[user]] in latest[:, 1]
        # the held-out item is not among the user's training positives
        assert data.test_items[user] not in data.train_items[data.train_users == user]


def test_candidates_are_the_test_item_and_99_unrated_items(data):
    assert data.candidates.shape == (943, 100)
    assert (data.candidates[:, 0] == data.test_items).all()
    negatives = data.candidates[:, 1:]
    assert not data.rated[np.arange(943)[:, None], negatives].any()
    assert all(len(set(row)) == 99 for row in negatives[:50])
    assert (load(inter_file()).candidates == data.candidates).all()  # fixed across runs


def test_one_epoch_beats_chance_and_negatives_are_unrated(tmp_path):
    cls = workload_class("recommendation")
    workload = cls(cls.default_hparams())
    workload.verify_data()
    trainer = workload.build(RunContext(seed=7))
    sizes = trainer.load_data()
    assert sizes.train_samples == (100_000 - 943) * 5 and sizes.eval_samples == 943
    users, items, labels = trainer._epoch_samples(1)
    negative = labels == 0
    assert int(negative.sum()) == 4 * int((labels == 1).sum())
    assert not trainer.rated[users[negative], items[negative]].any()
    before = trainer.evaluate()
    trainer.train_epoch(1)
    after = trainer.evaluate()
    assert 0.0 <= before <= 1.0 and after > 0.3  # chance is 10 in 100
