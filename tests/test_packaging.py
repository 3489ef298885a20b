"""The package as users get it: every subpackage and data file in the wheel, the CLI wired."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def configured() -> tuple[set[str], dict[str, str]]:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(tool["packages"]), tool["package-dir"]


def test_every_subpackage_folder_is_listed():
    packages, dirs = configured()
    found = set()
    for package, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found - packages == set(), "add these to [tool.setuptools] packages"


@pytest.mark.timeout(600)
def test_built_wheel_has_code_data_and_entry_point(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode != 0 and "No module named" in out.stderr:
        pytest.skip(f"cannot build without isolation here: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("tailmark-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "tailmark/cli.py",
        "tailmark/protos/inference_pb2.py",
        "tailmark/protos/inference.proto",
        "tailmark/server/grpc_sync.py",
        "tailmark/client/dispatcher.py",
        "tailmark/traces/samples/azure_conv_5min.jsonl",
        "tailmark/traces/FORMAT.md",
        "tailmark/training/compliance/common.yaml",
        "tailmark/training/workloads/smoke/__init__.py",
    ):
        assert expected in names, expected
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tailmark = tailmark.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_cli_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "tailmark", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("run", "serve", "report", "merge", "trace", "train", "export"):
        assert command in out.stdout, command


def test_the_cli_starts_without_importing_torch():
    code = "import sys, tailmark.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_export_names_every_reference_model():
    from tailmark.models.cli import MODEL_NAMES
    from tailmark.models.export import REFERENCE_MODELS

    assert set(MODEL_NAMES) == set(REFERENCE_MODELS)
