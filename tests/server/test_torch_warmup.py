"""PyTorch models are warmed up at load, and a model that disagrees with its config is UNAVAILABLE at once."""

from __future__ import annotations

from support.torch_models import resnet_repository
from tailmark.server.default_repository import RESNET_CONFIG


def test_config_mismatches_are_caught_at_load(tmp_path):
    repository = resnet_repository(
        tmp_path,
        good=RESNET_CONFIG,
        wrong_classes=RESNET_CONFIG.replace("dims: [ 10 ]", "dims: [ 7 ]"),
        wrong_channels=RESNET_CONFIG.replace("dims: [ 3, 32, 32 ]", "dims: [ 4, 32, 32 ]"),
    )
    try:
        assert repository.models["good"].ready
        wrong = repository.models["wrong_classes"]
        assert not wrong.ready
        assert "output 'logits' has shape [1, 10], config declares [1, 7]" in wrong.reason
        assert "warm-up on zeros of the declared shapes failed" in repository.models["wrong_channels"].reason
    finally:
        repository.close()


def test_warm_up_is_what_checks_and_it_is_not_counted(tmp_path):
    no_warm_up = 'parameters { key: "warmup_runs" value: { string_value: "0" } }\n'
    repository = resnet_repository(
        tmp_path,
        resnet=RESNET_CONFIG,
        unchecked=RESNET_CONFIG.replace("dims: [ 10 ]", "dims: [ 7 ]") + no_warm_up,
    )
    try:
        assert repository.get("resnet").stats.execution_count == 0  # warm-up runs are not requests
        assert repository.models["unchecked"].ready  # with warm-up off, the mismatch waits for a request
    finally:
        repository.close()
