"""MovieLens-100K from inside the installed ``recbole`` wheel (never copied into this repository).

Leave-one-out by latest timestamp: each user's most recent interaction is held out; every rating counts as an
implicit positive. Each held-out item is ranked against 99 items the user never rated, sampled once with a fixed
generator: the candidates are part of the data set, the same for every run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailmark.training.workload import DataMissing

INSTALL = "pip install --no-deps recbole==1.2.1"
INTER_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
# data set metadata (allowed before the clock starts without touching the data): sizes the model's embeddings
NUM_USERS, NUM_ITEMS = 943, 1682
EVAL_NEGATIVES = 99
CANDIDATE_SEED = 0


def inter_file() -> Path:
    """``ml-100k.inter`` inside the installed recbole package, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataMissing(f"MovieLens-100K (from the recbole wheel) not found: install it with `{INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k" / "ml-100k.inter"
    if not path.is_file():
        raise DataMissing(f"{path} is missing: reinstall it with `{INSTALL}`")
    return path


@dataclass(frozen=True, slots=True)
class Interactions:
    num_users: int
    num_items: int
    train_users: np.ndarray  # int64 (P,): the training positives
    train_items: np.ndarray
    test_items: np.ndarray  # int64 (U,): each user's held-out item
    candidates: np.ndarray  # int64 (U, 100): column 0 the held-out item, then 99 items the user never rated
    rated: np.ndarray  # bool (U, I): every item each user rated, train or test


def load(path: Path) -> Interactions:
    table = np.loadtxt(path, delimiter="\t", skiprows=1, dtype=np.int64, usecols=(0, 1, 3))
    _, users = np.unique(table[:, 0], return_inverse=True)
    _, items = np.unique(table[:, 1], return_inverse=True)
    stamps = table[:, 2]
    num_users, num_items = int(users.max()) + 1, int(items.max()) + 1
    # latest interaction per user; ties go to the later row of the file
    order = np.lexsort((np.arange(len(users)), stamps, users))
    last_of_user = order[np.r_[np.flatnonzero(np.diff(users[order])), len(order) - 1]]
    held = np.zeros(len(users), dtype=bool)
    held[last_of_user] = True
    rated = np.zeros((num_users, num_items), dtype=bool)
    rated[users, items] = True
    test_items = np.empty(num_users, dtype=np.int64)
    test_items[users[held]] = items[held]
    rng = np.random.default_rng(CANDIDATE_SEED)
    candidates = np.empty((num_users, EVAL_NEGATIVES + 1), dtype=np.int64)
    for user in range(num_users):
        unrated = np.flatnonzero(~rated[user])
        candidates[user, 0] = test_items[user]
        candidates[user, 1:] = rng.choice(unrated, EVAL_NEGATIVES, replace=False)
    return Interactions(num_users, num_items, users[~held], items[~held], test_items, candidates, rated)
