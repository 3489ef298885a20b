"""Bad input and faults: one readable line, everything measured kept, the right exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("tailmark")]
    assert "Traceback" not in stderr, stderr
    assert len(lines) >= 1, stderr
    return lines[-1]


def test_unreachable_endpoint(tmp_path):
    run = tailmark(
        "run", "--target", "127.0.0.1:1", "--model", "m", "--scenario", "single-stream", "--connect-timeout", "1",
        "--out", str(tmp_path / "r"), "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 1
    assert "cannot connect to 127.0.0.1:1" in one_line(run.stderr)
    assert not (tmp_path / "r").exists()  # a run that never started leaves no empty folder behind


def test_unknown_model(server, tmp_path):
    out = tmp_path / "r"
    run = tailmark(
        "run", "--target", server.target, "--model", "nope", "--scenario", "single-stream", "--out", str(out)
    )
    assert run.returncode == 1
    assert "does not serve model 'nope'" in one_line(run.stderr)
    assert not out.exists()


def test_tls_against_a_plain_text_server(server, tmp_path):
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--scenario", "single-stream", "--tls",
        "--connect-timeout", "2", "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 1
    line = one_line(run.stderr)
    assert "cannot connect" in line and "TLS" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "server", "--target-qps", "-1"], "target_qps=-1.0 requested; must be > 0"),
        (["--scenario", "single-stream", "--target-qps", "10"], "no selected scenario (single-stream) takes it"),
        (["--scenario", "trace"], "the trace scenario needs a trace file"),
        (["--scenario", "server", "--shape", "INPUT0:x"], "--shape 'INPUT0:x'"),
        (["--scenario", "server", "--header", "novalue"], "expected 'key: value'"),
    ],
)
def test_bad_settings_are_refused_in_one_line(server, args, message, tmp_path):
    run = tailmark("run", "--target", server.target, "--model", "identity", *args, "--out", str(tmp_path / "r"))
    assert run.returncode == 2, run.stderr
    assert message in one_line(run.stderr)


def test_malformed_trace_names_file_and_line(server, tmp_path):
    trace = tmp_path / "bad.jsonl"
    trace.write_text('{"format": "tailmark-trace", "version": 1, "time_unit": "ms"}\n{"t": 0}\n{"t": "soon"}\n')
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--scenario", "trace", "--trace", str(trace),
        "--warmup", "0", "--out", str(tmp_path / "r"), "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 1
    assert f"{trace}:3:" in one_line(run.stderr)


def start_run(target: str, out, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "tailmark", "run", "--target", target, "--model", "identity", "--no-progress"]
    args += ["--out", str(out), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_queries(out, timeout_s: float = 30.0) -> None:
    """Until the interval log shows the run is measuring."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = out / "latency.hlog"
        if log.exists() and "Tag=" in log.read_text():
            return
        time.sleep(0.2)
    raise AssertionError("the run never started measuring")


def test_ctrl_c_keeps_a_usable_partial_result(server, tmp_path):
    out = tmp_path / "r"
    process = start_run(
        server.target, out, "--scenario", "poisson", "--scenario", "single-stream", "--target-qps", "100",
        "--duration", "60", "--warmup", "0",
    )  # fmt: skip
    try:
        wait_for_queries(out)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in one_line(stderr)
    doc = results(out)
    assert doc["complete"] is False
    assert "SIGINT" in doc["interrupted"]
    assert [s["scenario"] for s in doc["scenarios"]] == ["poisson"]  # single-stream never started
    assert scenario(doc, "poisson")["classes"]["all"]["ok_count"] > 50
    assert json.loads((out / "histograms.json").read_text())["series"]


def test_server_that_dies_mid_run(test_repository, tmp_path):
    out = tmp_path / "r"
    with ServerProcess(test_repository) as doomed:
        process = start_run(doomed.target, out, "--scenario", "poisson", "--target-qps", "200", "--duration", "60",
                            "--warmup", "0", "--timeout", "2")  # fmt: skip
        try:
            wait_for_queries(out)
            time.sleep(1.0)
            os.kill(doomed.process.pid, signal.SIGKILL)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 1, stderr
    assert "target lost" in one_line(stderr)
    doc = results(out)
    assert doc["complete"] is False and "target lost" in doc["interrupted"]
    measured = scenario(doc, "poisson")["classes"]["all"]
    assert measured["ok_count"] > 100
    assert measured["errors"].get("UNAVAILABLE", 0) >= 200
    warnings = " ".join(scenario(doc, "poisson")["warnings"])
    assert "fell behind" not in warnings and "the rest failed" in warnings  # a dead server is not a slow one


def test_invalid_result_exits_zero_unless_asked(server, tmp_path):
    base = ["run", "--target", server.target, "--model", "identity", "--scenario", "single-stream", "--duration", "1",
            "--warmup", "0", "--min-queries", "100000", "--max-duration", "1", "--no-progress",
            "--no-calibration"]  # fmt: skip
    plain = tailmark(*base, "--out", str(tmp_path / "a"))
    assert plain.returncode == 0, plain.stderr
    assert results(tmp_path / "a")["scenarios"][0]["result"] == "INVALID"
    strict = tailmark(*base, "--out", str(tmp_path / "b"), "--fail-on-invalid")
    assert strict.returncode == 3
