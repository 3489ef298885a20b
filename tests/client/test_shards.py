"""A load split over client processes (``--shard I/N --start-at T``, ``--workers N``) and merged again.

The schedule's split is checked exactly through the real dispatcher (the shards' intended instants together
are the single process's, instant for instant); then real ``tailmark run`` processes against a real server
whose model sleeps a fixed 50 ms: the same seed run as one process and as three shards gives the same counts
and window and the same latencies within the host's timing noise; a late, a partial and a missing shard are
named and the merged result is INVALID; ``--workers 2`` runs end to end.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.repository import sleep_config
from support.runcli import results, tailmark
from support.serve import ServerProcess
from tailmark.cli import build_parser, main
from tailmark.client.clock_check import date_offset, offset_bounds
from tailmark.client.dispatcher import Dispatcher, Stop
from tailmark.client.errors import ConfigError
from tailmark.client.evidence import ScenarioEvidence
from tailmark.client.recorder import METRICS, Recorder
from tailmark.client.results import ClassResult, RunResult, ScenarioResult
from tailmark.client.samples import random_pool
from tailmark.client.schedule import poisson
from tailmark.client.settings import Scenario, ScenarioSettings, resolve
from tailmark.client.shard_merge import evidence_from_doc, merge_inputs
from tailmark.client.shards import READY, Shard, iso, parse_shard, parse_start_at
from tailmark.client.transport import ModelInfo, NullTransport, TensorInfo
from tailmark.client.workers import PARENT_ONLY, child_argv
from tailmark.server.default_repository import write_model

MS = 1_000_000
FIXED_MS = 50.0
INFO = ModelInfo(name="m", version="1", platform="p", inputs=(TensorInfo("INPUT0", "FP32", (4,)),), outputs=(),
                 max_batch_size=0)  # fmt: skip


# --- the split itself ---


class Intended(Recorder):
    """A recorder that also keeps every measured request's intended instant."""

    def __init__(self) -> None:
        super().__init__()
        self.intended: list[int] = []

    def record(self, key, intended_ns, sent_ns, done_ns, request_bytes=0) -> None:
        self.intended.append(intended_ns)
        super().record(key, intended_ns, sent_ns, done_ns, request_bytes)


async def _offsets(shard: Shard | None, warmup_ns: int, stop: Stop) -> tuple[list[int], int]:
    """One open loop through the real dispatcher: the measured requests' offsets from the schedule's start, and
    the window's length."""
    recorder = Intended()
    pool = random_pool(INFO, count=4, seed=0)
    dispatcher = Dispatcher(transport=NullTransport(INFO), pool=pool, recorder=recorder, scenario="s", sample_seed=0)
    schedule = poisson(4000.0, seed=5)
    if shard is not None:
        schedule, stop = shard.schedule(schedule, stop, warmup_ns)
    window = await dispatcher.open_loop(schedule, warmup_ns=warmup_ns, stop=stop, max_outstanding=0)
    await dispatcher.drain(timeout_s=5)
    zero = window.start_ns - warmup_ns
    return [t - zero for t in recorder.intended], window.end_ns - window.start_ns


@pytest.mark.parametrize("stop", [Stop(min_duration_ns=150 * MS, min_queries=100), Stop(0, 700),
                                  Stop(min_duration_ns=10**12, min_queries=10**9, max_queries=500)])  # fmt: skip
def test_the_shards_together_send_exactly_the_single_schedule(stop: Stop) -> None:
    async def both():
        single = await _offsets(None, 50 * MS, Stop(**vars(stop)))
        shards = [await _offsets(Shard(i, 3, time.time()), 50 * MS, Stop(**vars(stop))) for i in range(3)]
        return single, shards

    (single, window), shards = asyncio.run(both())
    assert len(single) >= 500
    assert sorted(t for offsets, _ in shards for t in offsets) == single  # instant for instant
    whole = [a.offset_ns for a in itertools.takewhile(lambda a: a.offset_ns <= single[-1], poisson(4000.0, seed=5))]
    for i, (offsets, _) in enumerate(shards):  # shard i: the arrivals at positions i, i + 3, ... (warm-up included)
        assert offsets == [t for k, t in enumerate(whole) if k % 3 == i and t >= 50 * MS]
    assert max(w for _, w in shards) == window  # the shard holding the last arrival ends the single window


def test_offline_requests_and_the_cap_add_up() -> None:
    for samples, batch in ((1024, 1), (1000, 8), (7, 8), (10, 3)):
        assert sum(Shard(i, 3, 0.0).offline_samples(samples, batch) for i in range(3)) == samples
    assert [Shard(i, 3, 0.0).cap(128) for i in range(3)] == [43, 43, 42]
    assert [Shard(i, 3, 0.0).cap(0) for i in range(3)] == [0, 0, 0]


def test_flag_values_are_parsed_or_refused() -> None:
    assert parse_shard("2/3") == (2, 3)
    assert parse_start_at("2026-12-06T12:00:00Z") == parse_start_at("1796558400") == 1796558400.0
    assert parse_start_at("2026-12-06T12:00:00") == 1796558400.0  # no zone: UTC
    for bad in ("3/3", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="expected I/N"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_start_at("noon")


def test_workers_give_their_shards_every_run_flag() -> None:
    argv = ["run", "--target", "h:1", "--model", "m", "--scenario", "server", "--scenario", "poisson",
            "--target-qps", "100", "--shape", "INPUT0:4", "--header", "a: b", "--tls", "--connections", "3",
            "--no-host-probe", "--workers", "2", "--cpus", "0,1", "--out", "x", "--fail-on-invalid"]  # fmt: skip
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(["run", *child_argv(args)])
    for key, value in vars(args).items():
        if key not in PARENT_ONLY and key != "split_parser":
            assert getattr(again, key) == value, key
    assert (again.workers, again.out, again.fail_on_invalid) == (None, None, False)


def test_clock_offset_bounds_narrow_at_a_second_boundary() -> None:
    # the server's clock is 0.3 s ahead; answers every 50 ms, each 2 ms on the wire
    samples = [(t, t + 0.002, float(int(t + 0.001 + 0.3))) for t in (1000.5 + 0.05 * k for k in range(8))]
    lo, hi = offset_bounds(samples)
    assert lo <= 0.3 <= hi and hi - lo <= 0.06


def test_evidence_is_read_back_from_results_json() -> None:
    probe = {"wakeups": 10, "late_ms": {"p99": 1.5, "max": 2.0}, "client_wait_ms": 50.0, "window_s": 2.0}
    doc = {"client_cpu_pct": 40.0, "offered": 100, "unsent_at_end": 3, "held_by_cap": 0, "host_probe": probe}
    e = evidence_from_doc(doc)
    assert (e.probe_p99_ns, e.probe_max_ns, e.unsent_at_end) == (1_500_000, 2_000_000, 3)
    assert e.client_wait_pct == pytest.approx(2.5)


def _shard_dir(root: Path, index: int, cpu_pct: float, lag_ns: int) -> Path:
    """A shard's run directory as a shard writes it: 300 answers of ~2 ms sent ``lag_ns`` late, and its evidence."""
    settings = resolve(ScenarioSettings(scenario=Scenario.SERVER, target_qps=200.0, min_duration_s=1.0,
                                        min_query_count=500, latency_bound_ms=50.0), mlperf=False)  # fmt: skip
    recorder = Recorder()
    for k in range(300):
        recorder.record(("server", "default"), intended_ns=0, sent_ns=lag_ns, done_ns=lag_ns + 2 * MS + k * 1000)
    histograms = {m: recorder.histogram(("server", "default"), m) for m in METRICS}
    evidence = ScenarioEvidence(client_cpu_pct=cpu_pct, offered=300, unsent_at_end=0, duration_s=1.5)
    result = ScenarioResult(settings=settings, classes={"default": ClassResult("default", **histograms)},
                            duration_s=1.5, client_cpu_pct=cpu_pct, evidence=evidence)  # fmt: skip
    out = root / f"shard-{index}"
    out.mkdir()
    shard = Shard(index, 2, 1796558400.0)
    shard.record["started_late_s"] = 0.002
    RunResult(environment={"shard": shard.record}, scenarios=[result], complete=True).write(out / "results.json")
    (out / "histograms.json").write_text(json.dumps(recorder.to_dict()))
    return out


def test_the_client_check_is_each_shards_own(tmp_path) -> None:
    """Shard 1 saturated its CPU, shard 0 did not: the merged client check fails on shard 1's own evidence and
    names it; with both calm the merged run (long enough only together) is VALID."""
    dirs = [_shard_dir(tmp_path, 0, cpu_pct=20.0, lag_ns=50_000), _shard_dir(tmp_path, 1, cpu_pct=97.0, lag_ns=50_000)]
    (result,) = merge_inputs(dirs).scenarios
    checks = {c.name: c for c in result.verdict.checks}
    assert not checks["client_bound"].passed and result.verdict.cause == "client"
    assert checks["client_bound"].detail.startswith("shard 1/2: client-bound (CPU saturated): client CPU 97 %")
    assert "shard 0/2" not in checks["client_bound"].detail
    assert checks["shards"].passed and checks["min_queries"].passed  # 600 queries together; 300 each
    assert result.by_class["all"].ok_count == 600

    (tmp_path / "calm").mkdir()
    calm = [_shard_dir(tmp_path / "calm", i, cpu_pct=20.0, lag_ns=50_000) for i in range(2)]
    (result,) = merge_inputs(calm).scenarios
    assert result.verdict.valid, result.verdict.reasons


# --- real processes against a server of fixed latency ---


@pytest.fixture(scope="module")
def fixed_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed")
    write_model(root, "fixed", sleep_config(FIXED_MS, instances=32))
    with ServerProcess(root, "--metrics-port", "0") as server:
        yield server


def _run_args(server, *extra: str) -> list[str]:
    return [
        "run", "--target", server.target, "--model", "fixed", "--scenario", "server", "--target-qps", "90",
        "--latency-bound-ms", "400", "--duration", "2", "--warmup", "0.3", "--min-queries", "150",
        "--shape", "INPUT0:4", "--seed", "7", "--no-calibration", "--no-host-probe", "--no-progress", *extra,
    ]  # fmt: skip


def _shard(server, index: int, count: int, out: Path, start_at: str) -> subprocess.Popen:
    argv = _run_args(server, "--shard", f"{index}/{count}", "--start-at", start_at, "--out", str(out))
    return subprocess.Popen([sys.executable, "-m", "tailmark", *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _when_ready(proc: subprocess.Popen) -> None:
    """Read the shard's stderr up to its READY line (``--start-at stdin``)."""
    assert proc.stderr is not None
    while READY not in (line := proc.stderr.readline()):
        assert line, f"the shard exited before it was ready (code {proc.wait()})"


def _all(doc: dict) -> dict:
    (scenario,) = doc["scenarios"]
    return scenario["classes"]["all"]


def test_three_shards_merged_equal_one_process(fixed_server, tmp_path) -> None:
    """--workers 3: three ``--shard I/3`` processes with one common start, merged into ``--out``."""
    shown = tailmark(*_run_args(fixed_server, "--workers", "3", "--out", str(tmp_path / "merged")), timeout_s=120)
    assert shown.returncode == 0, shown.stderr
    single = tailmark(*_run_args(fixed_server, "--out", str(tmp_path / "single")), timeout_s=120)
    assert single.returncode == 0, single.stderr
    dirs = [tmp_path / "merged" / "shards" / f"shard-{i}" for i in range(3)]

    one, merged = results(tmp_path / "single"), results(tmp_path / "merged")
    a, b = _all(one), _all(merged)
    # the same schedule: the same queries, offered and answered, over the same window
    assert b["query_count"] == a["query_count"] >= 150
    assert b["ok_count"] == a["ok_count"]
    assert merged["scenarios"][0]["duration_s"] == one["scenarios"][0]["duration_s"]
    assert b["offered_rate_qps"] == a["offered_rate_qps"]
    shares = [_all(results(d))["query_count"] for d in dirs]
    assert sum(shares) == a["query_count"] and max(shares) - min(shares) <= 1, shares
    # the same latencies: the server's fixed 50 ms plus the loopback, equal to the histogram's 0.1 % plus the
    # host's timing noise: 10 % of the service time, or twice the worse send-lag p99 (the clients' own lateness,
    # which late receive stamps share) where the host was busier than that (a shared 2-core VM: tens of ms)
    noise_ms = 2 * max(x["latency_ms"]["send_lag"]["p99"] for x in (a, b))
    for p in ("p50", "p90"):
        single_ms, merged_ms = (x["latency_ms"]["sent_to_done"][p] for x in (a, b))
        assert min(single_ms, merged_ms) >= FIXED_MS
        allowed = 0.001 * single_ms + max(0.1 * FIXED_MS, noise_ms)
        assert abs(merged_ms - single_ms) <= allowed, (p, single_ms, merged_ms, allowed)
    shards_check = next(c for c in b["verdict"]["checks"] if c["name"] == "shards")
    assert shards_check["passed"] and shards_check["detail"].startswith("3 of 3 shards"), shards_check
    client = next(c for c in b["verdict"]["checks"] if c["name"] == "client_bound")
    assert all(f"shard {i}/3:" in client["detail"] for i in range(3))  # each shard's own evidence
    members = merged["environment"]["shards"]["members"]
    assert [m["index"] for m in members] == [0, 1, 2] and all(m["started_late_s"] < 0.1 for m in members)
    assert all(results(d)["environment"]["shard"]["clock"]["date_source"] is None for d in dirs)  # one host
    assert merged["complete"] and (tmp_path / "merged" / "report.html").exists()
    assert f"server: {b['verdict']['result']}, judged again from the merged histograms of 3 runs" in shown.stdout


def test_a_late_a_partial_and_a_missing_shard_are_named(fixed_server, tmp_path) -> None:
    dirs = [tmp_path / f"shard-{i}" for i in range(4)]
    procs = [_shard(fixed_server, i, 4, dirs[i], "stdin") for i in (0, 1)]
    for proc in procs:
        _when_ready(proc)
    start_at = time.time() + 2.0  # time for both to read it and reach the wait, on a busy 2-core VM too
    for proc in procs:
        proc.stdin.write(f"{start_at!r}\n")
        proc.stdin.close()
    # shard 2 is started half a second after the common instant (given as ISO 8601, as a Job's spec would)
    time.sleep(max(start_at + 0.5 - time.time(), 0))
    procs.append(_shard(fixed_server, 2, 4, dirs[2], iso(start_at)))
    time.sleep(max(start_at + 1.0 - time.time(), 0))
    procs[1].send_signal(signal.SIGTERM)  # shard 1 stops mid-window: a partial run
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 130, 0], [p.stderr.read() for p in procs]
    # shard 3 never ran, and a directory a dead shard left empty is passed too
    (tmp_path / "empty").mkdir()
    out = tmp_path / "merged"
    shown = tailmark("merge", *map(str, dirs[:3]), str(tmp_path / "empty"), "-o", str(out), "--fail-on-invalid")
    assert shown.returncode == 3, shown.stderr
    doc = results(out)
    verdict = _all(doc)["verdict"]
    assert verdict["result"] == "INVALID" and verdict["cause"] == "client"
    detail = next(c["detail"] for c in verdict["checks"] if c["name"] == "shards")
    assert "shard 3/4 missing" in detail
    assert f"{tmp_path / 'empty'} could not be read" in detail
    assert f"shard 1/4 ({dirs[1]}) is partial during server: terminated (SIGTERM)" in detail
    late = results(dirs[2])["environment"]["shard"]["started_late_s"]
    assert late > 0.5 and f"shard 2/4 began {late:.3f} s after the common start" in detail
    assert "shard 0/4" not in detail  # the one on time is not blamed
    assert not doc["complete"] and "shard 3/4 missing" in doc["interrupted"]
    assert "shards: shard 3/4 missing" in shown.stdout


def test_two_workers_end_to_end(fixed_server, tmp_path) -> None:
    out = tmp_path / "workers"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("--cpus needs two CPUs to pin two workers apart")
    pinned = f"{cpus[0]},{cpus[1]}"
    run = tailmark(*_run_args(fixed_server, "--workers", "2", "--cpus", pinned, "--out", str(out)), timeout_s=120)
    assert run.returncode == 0, run.stderr
    doc = results(out)
    members = doc["environment"]["shards"]["members"]
    assert [m["index"] for m in members] == [0, 1]
    parts = [results(out / "shards" / f"shard-{i}") for i in range(2)]
    assert _all(doc)["query_count"] == sum(_all(p)["query_count"] for p in parts) >= 150
    shards_check = next(c for c in _all(doc)["verdict"]["checks"] if c["name"] == "shards")
    assert shards_check["passed"], shards_check
    assert [m["cpus"] for m in members] == [[cpus[0]], [cpus[1]]]
    assert "judged again from the merged histograms of 2 runs" in run.stdout


def test_a_shards_clock_is_compared_with_a_date_header(fixed_server) -> None:
    measured = date_offset(fixed_server.metrics_url)
    assert not isinstance(measured, str), measured
    assert abs(measured.offset_s) <= measured.uncertainty_s + 0.002  # one host: one clock
    assert measured.uncertainty_s < 0.05


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shard", "0/2"], "--shard I/N and --start-at T go together"),
        (["--shard", "0/2", "--start-at", "1", "--scenario", "single-stream"], "single-stream is a closed loop"),
        (["--workers", "2", "--cpus", "0"], "1 CPUs for 2 workers"),
        (["--cpus", "0"], "--cpus pins the processes of --workers"),
        (["--shard", "5/2", "--start-at", "1"], "expected I/N"),
        (["--workers", "2", "--scenario", "server", "--scenario", "offline"], "a split run measures one scenario"),
    ],
)
def test_bad_split_flags_are_one_line(extra, message, capsys) -> None:
    argv = ["run", "--target", "127.0.0.1:1", "--model", "m", "--no-progress", *extra]
    if "--scenario" not in extra:
        argv += ["--scenario", "server"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_merge_refuses_shards_of_different_runs(tmp_path, capsys) -> None:
    dirs = []
    for i, start in enumerate(("2026-12-06T12:00:00.000Z", "2026-12-06T12:05:00.000Z")):
        dirs.append(tmp_path / f"s{i}")
        dirs[-1].mkdir()
        shard = {"index": i, "count": 2, "start_at": start}
        RunResult(environment={"shard": shard}, complete=True).write(dirs[-1] / "results.json")
        (dirs[-1] / "histograms.json").write_text(json.dumps(Recorder().to_dict()))
    assert main(["merge", *map(str, dirs), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "the inputs are shards of different runs" in err and "merge the shards of one run" in err
    assert not (tmp_path / "m").exists()
