"""Shared pieces for the training tests: the real smoke workload (scikit-learn's digits), and the CLI as a user
runs it. Training runs use one torch thread: on a shared 2-core machine that is both faster and steadier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tailmark.training.workloads import workload_class


@pytest.fixture
def smoke():
    cls = workload_class("smoke")
    return cls(cls.default_hparams())


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``tailmark ARGS`` in a fresh process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "tailmark", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=240,
        check=False,
    )


@pytest.fixture
def cli():
    """``cli(*args, cwd=..., env=...)`` runs ``tailmark`` in a fresh process."""
    return run_cli
