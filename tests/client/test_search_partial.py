"""``tailmark search`` keeps search.json current after every step, so a Ctrl-C leaves the steps walked so far."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tailmark.client.search import Resolution, Walk, walk
from tailmark.client.step_evidence import StepOutcome


def test_the_walk_reports_itself_after_every_step():
    seen: list[tuple[int, float | None, float | None]] = []

    def step(rate: float, phase: str, confirmation: int) -> StepOutcome:
        return StepOutcome(rate <= 100.0)  # a fake endpoint that takes 100/s

    def keep(so_far: Walk) -> None:
        seen.append((len(so_far.steps), so_far.last_pass_qps, so_far.first_fail_qps))

    result = walk(step, start_qps=25.0, resolution=Resolution(relative=0.1), on_step=keep)
    assert [n for n, _, _ in seen] == list(range(1, len(result.steps) + 1))
    assert seen[:4] == [(1, 25.0, None), (2, 50.0, None), (3, 100.0, None), (4, 100.0, 200.0)]
    assert seen[-1][1:] == (result.last_pass_qps, result.first_fail_qps)  # the last report is the answer


def test_a_ctrl_c_leaves_search_json_with_the_steps_walked(server, tmp_path):
    out = tmp_path / "search"
    search = subprocess.Popen(
        [sys.executable, "-m", "tailmark", "search", "--target", server.target, "--model", "identity",
         "--shape", "INPUT0:16", "--slo", "p99=2000ms", "--start-qps", "20", "--trials", "1", "--duration", "1",
         "--warmup", "0", "--no-calibration", "--no-host-probe", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        steps: list = []
        while time.monotonic() < deadline and not steps:  # every rate passes: it doubles until stopped
            time.sleep(0.2)
            if (out / "search.json").exists():
                steps = json.loads((out / "search.json").read_text())["steps"]
            assert search.poll() is None, search.communicate()
        assert steps, "no step within 2 minutes"
        search.send_signal(signal.SIGINT)
        _, stderr = search.communicate(timeout=60)
    finally:
        if search.poll() is None:
            search.kill()
            search.communicate()
    assert search.returncode == 130, stderr
    doc = json.loads((out / "search.json").read_text())
    assert doc["complete"] is False and "interrupted by the user" in doc["stopped"]
    assert [s["rate_qps"] for s in doc["steps"]] == [20.0 * 2**i for i in range(len(doc["steps"]))]
    assert doc["steps"][0]["passed"] and all((out / s["run_dir"]).is_dir() for s in doc["steps"])
