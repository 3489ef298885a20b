"""Where a result was measured: host, CPU, OS, Python and the versions of the packages that matter.

Versions come from installed package metadata (``importlib.metadata``), never by importing the package:
importing torch costs seconds and memory a load generator should not pay.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

# Distribution names whose versions change what a run measures.
PACKAGES = ("tailmark", "grpcio", "protobuf", "numpy", "hdrhistogram", "uvloop", "torch", "onnxruntime", "tritonclient")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        return None


def capture() -> dict[str, Any]:
    """A JSON-ready description of this host and process, for results.json."""
    memory = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": _affinity(),  # cores this process may run on (containers, taskset)
        "memory_total_bytes": memory.total,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "packages": {name: package_version(name) for name in PACKAGES},
    }
