"""The ``test`` extras install what the tests compare against, so the comparisons run, not skip."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_test_extras_bring_the_real_loadgen():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower(): spec for spec in extras}
    assert names.get("mlcommons-loadgen") == "mlcommons-loadgen>=6.0"  # tests/client/test_outputs.py uses it
