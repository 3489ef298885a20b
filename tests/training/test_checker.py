"""Every workload has a compliance configuration whose benchmark name and target match the workload's own."""

from __future__ import annotations

import pytest
import yaml

from tailmark.training.checker import CONFIG_DIR, config_path
from tailmark.training.workloads import WORKLOADS, workload_class


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_configuration_matches_the_workload(name):
    spec = workload_class(name).spec
    records = {
        r["KEY"]["NAME"]: r["KEY"] for r in yaml.safe_load(config_path(spec.benchmark).read_text()) if "KEY" in r
    }
    assert f"== '{spec.benchmark}'" in records["submission_benchmark"]["CHECK"]
    assert f">= {spec.target:.2f} " in records["eval_accuracy"]["ATLEAST_ONE_CHECK"]
    # the shared rules live in common.yaml; a key defined in both would let one silence the other
    common = {r["KEY"]["NAME"] for r in yaml.safe_load((CONFIG_DIR / "common.yaml").read_text()) if "KEY" in r}
    assert not common & set(records)


def test_unknown_benchmark_has_no_configuration():
    with pytest.raises(FileNotFoundError):
        config_path("resnet")
