"""Run ``tailmark run`` as a user would (a subprocess) and read back what it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest


def tailmark(*args: str, timeout_s: float = 300.0, plots: bool = False) -> subprocess.CompletedProcess:
    """``plots=False``: a ``run`` writes report.html without its plots (``--no-plots``): matplotlib took most of a
    short run's CPU (5 of 6 s for four 1 s scenarios), and only the report's own tests look at them."""
    if args[:1] == ("run",) and not plots and "--no-plots" not in args:
        args = (*args, "--no-plots")
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


def valid_server_run_over_rest(
    target: str, model: str, out: Path, *, target_qps: int, min_queries: int, extra: Sequence[str] = ()
) -> dict:
    """``tailmark run --transport http`` (4 connections) of a 3 s Server scenario with ``INPUT0:16`` and a 50 ms
    bound; asserts that it exits 0 with no errors and a VALID verdict, and returns its results.json."""
    run = tailmark(
        "run", "--target", target, "--model", model, "--scenario", "server",
        "--target-qps", str(target_qps), "--shape", "INPUT0:16", "--duration", "3", "--warmup", "0.2",
        "--min-queries", str(min_queries), "--latency-bound-ms", "50", "--out", str(out), "--no-progress",
        "--transport", "http", "--connections", "4", *extra, timeout_s=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = results(out)
    everything = scenario(doc, "server")["classes"]["all"]
    assert everything["error_count"] == 0, everything["errors"]
    failed = [c for c in everything["verdict"]["checks"] if not c["passed"]]
    if everything["verdict"].get("cause") == "host":  # the tool itself says this host could not judge the run
        pytest.skip(f"the host was too noisy to judge a Server run here: {failed[-1]['detail']}")
    assert everything["verdict"]["result"] == "VALID", failed
    return doc
