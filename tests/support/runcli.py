"""Run ``tailmark run`` as a user would (a subprocess) and read back what it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def tailmark(*args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tailmark", *args], capture_output=True, text=True, timeout=timeout_s)


def results(out_dir: Path) -> dict:
    return json.loads((out_dir / "results.json").read_text())


def scenario(doc: dict, name: str) -> dict:
    for entry in doc["scenarios"]:
        if entry["scenario"] == name:
            return entry
    raise KeyError(f"no scenario {name!r} in results ({[s['scenario'] for s in doc['scenarios']]})")


def latency(doc: dict, name: str, metric: str = "intended_to_done", traffic_class: str = "all") -> dict:
    return scenario(doc, name)["classes"][traffic_class]["latency_ms"][metric]
