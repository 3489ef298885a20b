"""report.html from a real short run's directory: every section is there, drawn from what the run wrote, and
headless Chromium renders the page (when it is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.cli import main
from tailmark.client.timeline import read_slices
from tailmark.traces.arrival import Arrival
from tailmark.traces.writer import write_trace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(test_repository, tmp_path_factory) -> Path:
    """A 5 s trace of two classes (chat 40/s, batch 10/s) against a server with metrics, stability on."""
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("report")
    chat = [Arrival(offset_ns=i * 25_000_000, traffic_class="chat") for i in range(200)]
    batch = [Arrival(offset_ns=7_000_000 + i * 100_000_000, traffic_class="batch") for i in range(50)]
    trace = folder / "two.jsonl"
    write_trace(trace, sorted(chat + batch, key=lambda a: a.offset_ns), time_unit="ms")
    out = folder / "run"
    with ServerProcess(test_repository, "--metrics-port", "0") as server:
        run = tailmark(
            "run", "--target", server.target, "--model", "identity", "--shape", "INPUT0:16", "--scenario", "trace",
            "--trace", str(trace), "--warmup", "0", "--metrics-url", server.metrics_url, "--metrics-interval", "0.5",
            "--stability-percentage", "10", "--stability-window-s", "1", "--out", str(out), "--no-progress",
            "--no-calibration", plots=True,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "trace stability: " in run.stdout  # the console's line
    return out


def test_the_page_has_every_section_inline(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for alt in ("latency by percentile per traffic class", "send lag by percentile", "server metrics",
                "latency over time with the host probe", "time per request by part"):  # fmt: skip
        assert f"alt='{alt}' src='data:image/png;base64," in page, alt
    assert "<h2 id='breakdown'>Where the time went</h2>" in page and "<th>server queue</th>" in page
    assert "<h2 id='s0'>trace: " in page and "trace stability: " in page
    assert ">chat</td>" in page and ">batch</td>" in page  # a row per class in the summary table
    assert "http" not in page.replace("http-equiv", "").replace(f"http://{_metrics_host(page)}", "")


def _metrics_host(page: str) -> str:
    """The scraped URL is named in the notes (as text, never fetched)."""
    start = page.index("scraped from http://") + len("scraped from http://") if "scraped from http://" in page else 0
    return page[start : page.index("/", start)] if start else "-"


def test_the_time_figure_reads_every_measured_request_from_the_interval_log(run_dir: Path) -> None:
    entry = scenario(results(run_dir), "trace")
    begin, end = entry["evidence"]["window_in_log_s"]
    assert 0 <= begin < end and end - begin == pytest.approx(entry["duration_s"], abs=0.01)
    slices = read_slices(run_dir / "latency.hlog")["trace"]
    assert sum(s.count for s in slices) == entry["classes"]["all"]["ok_count"]  # nothing lost, nothing doubled
    assert {c for s in slices for c in s.classes} == {"chat", "batch"}
    steady = entry["evidence"]["stability"]
    assert steady["windows"] == 3 and steady["stable"] in (True, False) and len(steady["per_window"]) == 3
    assert all(begin <= w["start_s"] and w["start_s"] + w["length_s"] <= end + 1e-3 for w in steady["per_window"])


def test_report_draws_the_same_sections_again(run_dir: Path, capsys) -> None:
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0  # in this process: matplotlib is imported once for the module
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 5 and "trace stability: " in capsys.readouterr().out


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_chromium_renders_the_page(run_dir: Path, tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    shot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
         (run_dir / "report.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.exists(), "Chromium wrote no screenshot"
    with image.open(shot) as picture:
        assert picture.size == (1280, 2400)
        colours = picture.convert("RGB").resize((320, 600)).getcolors(maxcolors=100_000)
    assert colours is not None and len(colours) > 50  # text, tables and plots, not a blank page
