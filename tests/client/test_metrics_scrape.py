"""client/metrics_scrape.py: the endpoint's /metrics scraped during each scenario, against a real server."""

from __future__ import annotations

import json
import re
import shutil
import socket

import pytest

from support import peer_venvs
from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from tailmark.client.embedded import METRICS
from tailmark.client.metrics_scrape import DEFAULT_SERIES, Scrape, Scraper, ScrapeSettings, parse, series_doc

EXPOSITION = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="sleep",version="1"} 12
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
# TYPE nv_energy_consumption counter
nv_energy_consumption{gpu_uuid="GPU-1"} 1e+06
# TYPE request_seconds histogram
request_seconds_bucket{le="1"} 3
request_seconds_bucket{le="+Inf"} 4
request_seconds_count 4
request_seconds_sum 2.5
"""


def test_parse_keeps_the_default_series_under_their_exposed_names():
    cumulative: set[str] = set()
    values = parse(EXPOSITION, ScrapeSettings("http://x/metrics").keep, cumulative)
    assert values == {
        ("nv_inference_request_success", (("model", "sleep"), ("version", "1"))): 12.0,  # not *_total
        ("nv_gpu_utilization", (("gpu_uuid", "GPU-1"),)): 0.5,
    }
    assert cumulative == {"nv_inference_request_success"}
    more = parse(EXPOSITION, ScrapeSettings("http://x/metrics", extra_series="request_seconds_.*").keep, cumulative)
    assert more[("request_seconds_count", ())] == 4.0 and more[("request_seconds_bucket", (("le", "+Inf"),))] == 4.0
    assert {"request_seconds_count", "request_seconds_sum", "request_seconds_bucket"} <= cumulative
    assert ("nv_energy_consumption", (("gpu_uuid", "GPU-1"),)) not in more  # whole names only


def test_series_doc_rates_summary_and_window():
    scraper = Scraper(ScrapeSettings("http://x/metrics"))
    key = ("nv_inference_request_success", (("model", "m"),))
    gauge = ("nv_inference_pending_request_count", (("model", "m"),))
    scraper.cumulative.add(key[0])
    for at_s, count, pending in ((-1.0, 0, 0), (0.0, 10, 2), (1.0, 110, 5), (2.0, 210, 3), (3.0, 5, 0)):
        scraper.samples.append(Scrape(at_ns=10**9 + int(at_s * 1e9), values={key: count, gauge: pending}))
    series, summary = series_doc(scraper, start_ns=10**9, duration_s=2.0)
    assert series["t_s"] == [-1.0, 0.0, 1.0, 2.0, 3.0] and series["window_s"] == [0.0, 2.0]
    counter = next(e for e in series["series"] if e["name"] == key[0])
    assert counter["rate_per_s"] == [None, 10.0, 100.0, 100.0, None]  # a reset is no rate
    facts = {f["name"]: f for f in summary["series"]}
    assert facts[key[0]]["rate_per_s"] == 100.0  # over the window: (210 - 10) / 2 s
    assert facts[gauge[0]]["max"] == 5 and facts[gauge[0]]["mean"] == pytest.approx(10 / 3)
    assert summary["scrapes"] == 5 and summary["error"] is None


@pytest.fixture(scope="module")
def metrics_server(test_repository):
    with ServerProcess(test_repository, "--metrics-port", "0") as process:
        yield process


def test_embedded_server_reports_its_metrics_address(metrics_server):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", metrics_server.metrics_url)
    assert any(METRICS.search(line) for line in metrics_server.lines)


def test_run_records_the_servers_metrics_beside_the_latencies(tmp_path, metrics_server):
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", metrics_server.target, "--model", "sleep", "--scenario", "poisson", "--target-qps", "20",
        "--duration", "3", "--warmup", "0", "--metrics-url", metrics_server.metrics_url, "--metrics-interval", "0.5",
        "--metrics-series", "nv_inference_(count|exec_count)", "--out", str(out), "--no-progress", "--no-calibration",
        plots=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    entry = scenario(results(out), "poisson")
    scraped = entry["server_metrics"]
    assert scraped["url"] == metrics_server.metrics_url and scraped["failed_scrapes"] == 0
    assert scraped["scrapes"] >= 6  # one before, one after, one every 0.5 s of a >= 3 s scenario
    facts = {(f["name"], f["labels"].get("model")): f for f in scraped["series"]}
    success = facts[("nv_inference_request_success", "sleep")]
    # first scrape before the first request, last after the last answer, no warm-up: the server counted
    # exactly the requests the client sent (each test's server is its own: nothing else calls sleep here)
    assert success["kind"] == "counter"
    assert success["increase"] == entry["classes"]["all"]["query_count"]
    achieved = entry["classes"]["all"]["achieved_rate_qps"]  # sleep: 2 x 50 ms, 40/s at most
    assert 0.6 * achieved <= success["rate_per_s"] <= 1.4 * achieved
    assert facts[("nv_inference_pending_request_count", "sleep")]["kind"] == "gauge"
    assert ("nv_inference_exec_count", "sleep") in facts  # kept by --metrics-series
    series = json.loads((out / "metrics.json").read_text())
    assert series["format"] == "tailmark.metrics/1" and len(series["scenarios"]) == 1
    timeline = series["scenarios"][0]
    assert timeline["t_s"][0] < 0 < timeline["t_s"][-1] and timeline["t_s"] == sorted(timeline["t_s"])
    assert timeline["t_s"][-1] >= timeline["window_s"][1]
    assert {e["name"] for e in timeline["series"]} >= {*DEFAULT_SERIES[:3], "nv_inference_exec_count"}
    page = (out / "report.html").read_text()
    assert "alt='server metrics'" in page and "server metrics: " in run.stdout
    (out / "report.html").unlink()  # `tailmark report` draws it again from the run directory
    assert tailmark("report", str(out)).returncode == 0
    assert "alt='server metrics'" in (out / "report.html").read_text()


def test_unreachable_metrics_url_warns_once_and_the_run_completes(tmp_path, metrics_server):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", metrics_server.target, "--model", "identity", "--scenario", "poisson", "--target-qps", "50",
        "--scenario", "single-stream", "--duration", "1", "--warmup", "0", "--min-queries", "10",
        "--metrics-url", f"http://127.0.0.1:{port}/metrics", "--out", str(out), "--no-progress", "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "server metrics" in line]
    assert len(warnings) == 1 and "warning" in warnings[0] and "Traceback" not in run.stderr
    doc = results(out)
    assert doc["complete"] and len(doc["scenarios"]) == 2
    for entry in doc["scenarios"]:
        assert entry["classes"]["all"]["ok_count"] > 0
        scraped = entry["server_metrics"]
        assert scraped["scrapes"] == 0 and scraped["error"].startswith("unreachable") and scraped["series"] == []
    assert "alt='server metrics'" not in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--metrics-url", "ftp://x/metrics"], "expected http://HOST:PORT/metrics"),
        (["--metrics-url", "http://x/metrics", "--metrics-interval", "0"], "--metrics-interval 0: must be > 0"),
        (["--metrics-url", "http://x/metrics", "--metrics-series", "("], "not a regular expression"),
    ],
)
def test_bad_metrics_flags_are_refused_in_one_line(flags, message):
    bad = tailmark("run", "--target", "127.0.0.1:1", "--model", "m", *flags)
    assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_real_triton_metrics_count_the_requests_sent(tmp_path):
    """Triton's own /metrics (prometheus-cpp, port --metrics-port, 8002 by default): the same numbers hold."""
    from tailmark.deploy.triton.launch import TritonProcess, TritonUnavailable, ensure_venv
    from tailmark.deploy.triton.repository import PYTHON_MODEL
    from tailmark.models.export import identity_config, write_config

    peer_venvs.prebuild()  # this session's other peers too, in parallel
    try:
        ensure_venv()
    except TritonUnavailable as exc:
        pytest.skip(f"real Triton unavailable: {exc}")
    model_dir = tmp_path / "repo" / "identity"  # the python backend's identity, as deploy/triton writes it
    kind = 'parameters { key: "tailmark_kind" value: { string_value: "identity" } }\n'
    write_config(model_dir, identity_config('backend: "python"', kind))
    shutil.copyfile(PYTHON_MODEL, model_dir / "1" / "model.py")
    out = tmp_path / "run"
    with TritonProcess(tmp_path / "repo", log_path=tmp_path / "tritonserver.log") as triton:
        url = f"http://127.0.0.1:{triton.metrics_port}/metrics"
        run = tailmark(
            "run", "--target", triton.target, "--model", "identity", "--scenario", "poisson", "--target-qps", "50",
            "--shape", "INPUT0:16", "--duration", "2", "--warmup", "0", "--metrics-url", url, "--out", str(out),
            "--no-progress", "--no-calibration", timeout_s=300,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    entry = scenario(results(out), "poisson")
    scraped = entry["server_metrics"]
    assert scraped["scrapes"] >= 3 and not scraped["failed_scrapes"], scraped
    facts = {(f["name"], f["labels"].get("model")): f for f in scraped["series"]}
    assert facts[("nv_inference_request_success", "identity")]["increase"] == entry["classes"]["all"]["query_count"]
    assert facts[("nv_inference_queue_duration_us", "identity")]["kind"] == "counter"
    achieved = entry["classes"]["all"]["achieved_rate_qps"]
    assert 0.6 * achieved <= facts[("nv_inference_request_success", "identity")]["rate_per_s"] <= 1.4 * achieved
