"""Run the stock MLPerf compliance checker on a result file, with the workload's configuration.

    python -m mlperf_logging.compliance_checker --usage training --ruleset 5.0.0 \
        --config <abs path>/training/compliance/<benchmark>.yaml result_<i>.txt

The ruleset only picks the checker's log parser here (5.0.0's); the rules come from our configuration.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "compliance"
RULESET = "5.0.0"


@dataclass(frozen=True, slots=True)
class Compliance:
    passed: bool
    output: str  # the checker's report: which rule failed, on which line

    @property
    def verdict(self) -> str:
        return "SUCCESS" if self.passed else "FAILED"


def config_path(benchmark: str) -> Path:
    path = CONFIG_DIR / f"{benchmark}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no compliance configuration for {benchmark} in {CONFIG_DIR}")
    return path


def checker_command(log: Path, benchmark: str, report: Path, config: Path | None = None) -> list[str]:
    return [
        sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", RULESET,
        "--config", str(config or config_path(benchmark)), "--log_output", str(report), str(log),
    ]  # fmt: skip


def check_log(log: Path, benchmark: str, config: Path | None = None) -> Compliance:
    """The checker's verdict on ``log``; its report is kept beside the log as ``<log>.compliance``.

    ``config`` replaces the workload's own configuration (a test's copy with a looser target).
    """
    report = log.with_name(log.name + ".compliance")
    command = checker_command(log, benchmark, report, config)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    text = report.read_text(encoding="utf-8") if report.is_file() else done.stdout + done.stderr
    passed = done.returncode == 0 and text.rstrip().endswith("SUCCESS")
    return Compliance(passed, text)
