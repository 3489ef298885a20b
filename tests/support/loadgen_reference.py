"""Reference logs from the real MLPerf LoadGen (``pip install mlcommons-loadgen``) with a trivial SUT.

The SUT answers every query at once, inside ``IssueQuery``; the run is short. Only the *structure* of what
LoadGen writes is used (which lines, which keys), never its numbers. Regenerate the checked-in copies with::

    python tests/support/loadgen_reference.py tests/golden/loadgen
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCENARIOS = ("Server", "Offline", "SingleStream", "MultiStream")


def run(scenario: str, out_dir: Path) -> Path:
    """Run LoadGen's ``scenario`` (PerformanceOnly, ~0.3 s, VALID on an idle box) and return its log folder."""
    import mlperf_loadgen as lg

    out_dir.mkdir(parents=True, exist_ok=True)

    def issue(queries):
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in queries])

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(64, 64, lambda samples: None, lambda samples: None)
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = 300
    settings.min_query_count = 700  # enough for Server's and MultiStream's early stopping
    settings.server_target_qps = 2000
    settings.offline_expected_qps = 5e6
    settings.single_stream_expected_latency_ns = 1000
    settings.multi_stream_expected_latency_ns = 1000
    log = lg.LogSettings()
    log.log_output.outdir = str(out_dir)
    log.enable_trace = False
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return out_dir


def detail_keys(path: Path) -> list[str]:
    """The distinct keys of an mlperf_log_detail.txt, in first-seen order."""
    keys: dict[str, None] = {}
    for line in path.read_text().splitlines():
        if line.startswith(":::MLLOG "):
            keys.setdefault(json.loads(line[len(":::MLLOG ") :])["key"], None)
    return list(keys)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for name in SCENARIOS:
        folder = run(name, target / f".{name}")
        (target / f"{name}.summary.txt").write_text((folder / "mlperf_log_summary.txt").read_text())
        (target / f"{name}.detail_keys.txt").write_text("\n".join(detail_keys(folder / "mlperf_log_detail.txt")) + "\n")
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
