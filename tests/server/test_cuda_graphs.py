"""CUDA graphs in the PyTorch backend: the size rules everywhere, the graphs themselves on a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.torch_models import resnet_repository
from tailmark.server.backends.cuda_graphs import padded_size, parse_sizes
from tailmark.server.config import ConfigError
from tailmark.server.default_repository import RESNET_CONFIG


def graphs(sizes: str) -> str:
    return f'parameters {{ key: "cuda_graph_batch_sizes" value: {{ string_value: "{sizes}" }} }}\n'


def test_sizes_parse_sorted_and_bounded_by_the_batch_limit():
    assert parse_sizes("8, 1,4,4", 8) == (1, 4, 8)
    assert parse_sizes("  ", 8) == ()
    for bad, limit, reason in (("0,2", 8, "within 1..8"), ("16", 8, "within 1..8"), ("a,b", 8, "integers"),
                               ("1", 0, "batching model")):  # fmt: skip
        with pytest.raises(ConfigError, match=reason):
            parse_sizes(bad, limit)


def test_a_batch_pads_up_to_the_smallest_captured_size_that_holds_it():
    sizes = (1, 4, 8)
    assert [padded_size(b, sizes) for b in (1, 2, 4, 5, 8, 9)] == [1, 4, 4, 8, 8, None]


def test_on_the_cpu_the_parameter_is_checked_then_ignored(tmp_path):
    repository = resnet_repository(
        tmp_path, graphs=RESNET_CONFIG + graphs("1,4,8"), too_big=RESNET_CONFIG + graphs("1,16")
    )
    try:
        model = repository.get("graphs")
        batch = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
        logits = model.backend.execute({"input": batch})["logits"]
        assert logits.shape == (3, 10) and np.isfinite(logits).all()
        assert not repository.models["too_big"].ready
        assert "within 1..8" in repository.models["too_big"].reason
    finally:
        repository.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graphs)")
def test_graph_replays_equal_eager_runs_at_every_batch_size(tmp_path):
    repository = resnet_repository(tmp_path, "KIND_GPU", eager=RESNET_CONFIG, graphs=RESNET_CONFIG + graphs("1,4,8"))
    try:
        eager, graphed = repository.get("eager").backend, repository.get("graphs").backend
        assert graphed._graphs is not None and graphed._graphs.sizes == (1, 4, 8)
        rng = np.random.default_rng(1)
        for rows in (1, 3, 4, 7, 8):  # exact sizes and padded ones
            batch = rng.random((rows, 3, 32, 32), dtype=np.float32)
            expected = eager.execute({"input": batch})["logits"]
            got = graphed.execute({"input": batch})["logits"]
            assert got.shape == (rows, 10)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    finally:
        repository.close()
