"""The vision workload's data: the Debian package's files, their checksums, and the message when they are missing.
Training it takes minutes, so it is timed by hand (README), not here."""

from __future__ import annotations

import shutil

import pytest

from tailmark.training.workload import DataCorrupt, DataMissing
from tailmark.training.workloads import workload_class
from tailmark.training.workloads.vision import DEFAULT_DIR, DIR_ENV, FILES, load_split, read_idx

installed = pytest.mark.skipif(
    not all((DEFAULT_DIR / name).is_file() for name in FILES),
    reason="needs `apt-get install dataset-fashion-mnist`",
)


@pytest.fixture
def vision():
    cls = workload_class("vision")
    return cls(cls.default_hparams())


@installed
def test_package_files_match_their_checksums_and_shapes(vision):
    vision.verify_data()
    assert read_idx(DEFAULT_DIR / "t10k-images-idx3-ubyte.gz").shape == (10_000, 28, 28)
    x_train, y_train, x_eval, y_eval = load_split(DEFAULT_DIR)
    assert x_train.shape == (60_000, 1, 28, 28) and x_eval.shape == (10_000, 1, 28, 28)
    assert sorted(y_train.unique().tolist()) == list(range(10)) and len(y_eval) == 10_000
    # normalised with the data set's published pixel statistics
    assert abs(x_train.mean().item()) < 0.01 and abs(x_train.std().item() - 1.0) < 0.01


@installed
def test_a_corrupt_file_is_refused(vision, tmp_path, monkeypatch):
    for name in FILES:
        shutil.copy(DEFAULT_DIR / name, tmp_path / name)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    with pytest.raises(DataCorrupt, match="t10k-labels"):
        vision.verify_data()


def test_missing_data_names_the_install_command(vision, cli, tmp_path, monkeypatch):
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    with pytest.raises(DataMissing, match="apt-get install dataset-fashion-mnist"):
        vision.data_files()
    done = cli("train", "vision", "--runs", "1", cwd=tmp_path, env={DIR_ENV: str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "install it with `apt-get install dataset-fashion-mnist`" in done.stderr
