"""Mixed traffic and goodput through ``tailmark run`` against a real server: the test repository's ``identity``
(answers at once) and ``sleep`` (50 ms fixed, 2 instances) models."""

from __future__ import annotations

import csv
import itertools

import pytest
import yaml

from support.runcli import results, scenario, tailmark
from tailmark.cli import main
from tailmark.client.traffic_classes import class_schedule, parse_classes
from tailmark.traces.arrival import Arrival
from tailmark.traces.writer import write_trace

SEED = 7
WARMUP_S, DURATION_S = 0.5, 3.0
CLASSES = [
    {"name": "fast", "model": "identity", "shape": {"INPUT0": [16]}, "slo": "p50=45ms", "min_query_count": 10,
     "arrival": {"process": "poisson", "rate_qps": 40}},
    # the sleep model takes 50 ms: a 45 ms bound is missed by every request, by the endpoint
    {"name": "slow", "model": "sleep", "slo": "p50=45ms", "min_query_count": 10,
     "arrival": {"process": "fixed", "rate_qps": 10}},
    # bursts: on average 2 a second, 3 requests at one instant each, each request a batch of 4 samples
    {"name": "bursts", "model": "identity_batched", "batch_size": 4, "slo": "p50=45ms", "request_slo": "1s",
     "min_query_count": 5, "arrival": {"process": "batch", "rate_qps": 2, "sizes": "fixed:3", "split": True}},
]  # fmt: skip


def _expected_counts(classes: list[dict]) -> dict[str, int]:
    """Arrivals each class's schedule puts inside the measured window, from the schedule itself."""
    counts = {}
    lo, hi = round(WARMUP_S * 1e9), round((WARMUP_S + DURATION_S) * 1e9)
    for index, spec in enumerate(parse_classes(classes)):
        n = 0
        for arrival in class_schedule(spec, index, SEED, 1):
            if arrival.offset_ns >= hi:
                break
            n += arrival.offset_ns >= lo
        counts[spec.name] = n
    return counts


def _run_file(tmp_path, classes: list[dict], **extra) -> str:
    path = tmp_path / "mixed.yaml"
    entry = {"scenario": "mixed", "min_duration_s": DURATION_S, "warmup_s": WARMUP_S, "schedule_seed": SEED, **extra}
    path.write_text(yaml.safe_dump({"scenarios": [{**entry, "classes": classes}]}))
    return str(path)


def test_classes_keep_exact_counts_own_verdicts_and_goodput(server, tmp_path):
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--config", _run_file(tmp_path, CLASSES),
        "--send-lag-bound-ms", "100", "--out", str(out), "--no-progress", "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    mixed = scenario(results(out), "mixed")
    classes = mixed["classes"]
    assert list(classes) == ["all", "bursts", "fast", "slow"]
    expected = _expected_counts(CLASSES)
    assert expected["bursts"] % 3 == 0 and min(expected.values()) >= 10
    for name, count in expected.items():  # every arrival of the schedule inside the window, and nothing else
        assert classes[name]["query_count"] == classes[name]["ok_count"] == count, name
        assert classes[name]["offered_rate_qps"] == pytest.approx(count / DURATION_S)
    assert classes["all"]["query_count"] == sum(expected.values())
    assert classes["bursts"]["sample_count"] == 4 * expected["bursts"]  # the class's own batch size
    assert classes["all"]["sample_count"] == sum(expected.values()) + 3 * expected["bursts"]
    assert mixed["duration_s"] == pytest.approx(DURATION_S)
    # each class's own settings: the run file's classes are recorded
    assert [c["name"] for c in mixed["settings"]["effective"]["classes"]] == ["fast", "slow", "bursts"]

    slow = classes["slow"]["verdict"]
    failed = {c["name"] for c in slow["checks"] if not c["passed"]}
    assert slow["result"] == "INVALID" and "latency_bound" in failed, slow
    assert classes["slow"]["latency_ms"]["intended_to_done"]["p50"] >= 50.0
    fast = classes["fast"]["verdict"]
    if fast["cause"] == "host":
        pytest.skip(f"the host was too noisy to judge the fast class: {[c['detail'] for c in fast['checks']]}")
    assert fast["result"] == "VALID", [c for c in fast["checks"] if not c["passed"]]
    assert slow["cause"] in ("endpoint", "host")  # the endpoint's 50 ms, unless this busy host was blamed first
    assert classes["all"]["verdict"]["result"] == "INVALID"  # "all" is VALID only when every class is
    assert any(c["detail"].startswith("slow: ") and not c["passed"] for c in classes["all"]["verdict"]["checks"])

    # goodput: each class against its own SLO; the slow class never meets 45 ms
    good = {name: c["goodput"] for name, c in classes.items()}
    assert good["slow"]["good_count"] == 0 and good["slow"]["query_count"] == expected["slow"]
    assert good["slow"]["slo_ms"] == 45.0 and good["bursts"]["slo_ms"] == 1000.0
    assert good["fast"]["good_count"] <= expected["fast"]
    assert good["all"]["good_count"] == sum(good[n]["good_count"] for n in expected)
    assert good["all"]["query_count"] == sum(expected.values())
    assert good["all"]["slo_ms"] is None  # the classes answer to different bounds
    assert good["all"]["rate_per_s"] == pytest.approx(good["all"]["good_count"] / DURATION_S)
    assert "goodput/s" in run.stdout and "goodput, requests/s within their SLO" in run.stdout


def test_goodput_from_a_traces_deadlines(server, tmp_path):
    # the sleep model takes 50 ms: a 10 ms deadline is always missed (a failure), a 5 s one always met
    tight = [Arrival(offset_ns=i * 50_000_000, traffic_class="tight", deadline_ns=10_000_000) for i in range(20)]
    loose = [Arrival(25_000_000 + i * 50_000_000, traffic_class="loose", deadline_ns=5 * 10**9) for i in range(30)]
    trace = tmp_path / "deadlines.jsonl"
    write_trace(trace, sorted(tight + loose, key=lambda a: a.offset_ns), time_unit="ms")
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "sleep", "--scenario", "trace", "--trace", str(trace),
        "--warmup", "0", "--out", str(out), "--no-progress", "--no-calibration", "--no-host-probe",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    classes = scenario(results(out), "trace")["classes"]
    assert classes["tight"]["goodput"]["good_count"] == 0
    assert classes["tight"]["goodput"]["deadline_count"] == 20
    assert classes["loose"]["goodput"]["good_count"] == 30
    everything = classes["all"]["goodput"]
    assert (everything["good_count"], everything["query_count"], everything["share"]) == (30, 50, 0.6)
    assert everything["slo_ms"] is None and everything["deadline_count"] == 50


def test_goodput_from_the_request_slo_flag(server, tmp_path):
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "sleep", "--scenario", "fixed-interval", "--target-qps", "10",
        "--duration", "2", "--warmup", "0", "--min-queries", "10", "--request-slo", "45ms", "--out", str(out),
        "--no-progress", "--no-calibration", "--no-host-probe",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = scenario(results(out), "fixed-interval")
    good = doc["classes"]["all"]["goodput"]
    assert good["slo_ms"] == 45.0 and good["good_count"] == 0
    assert good["query_count"] == doc["classes"]["all"]["query_count"] >= 20  # LoadGen's stop: the query at 2 s too
    assert doc["settings"]["effective"]["request_slo_ms"] == 45.0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {(r["traffic_class"], r["goodput_count"], r["request_slo_ms"]) for r in rows} >= {("all", "0", "45.0")}


@pytest.mark.parametrize(
    ("classes", "extra", "message"),
    [
        ([{"name": "a", "arrival": {"process": "poisson"}}], {}, "poisson arrivals take rate_qps; missing rate_qps"),
        ([{"name": "a", "arrival": {"process": "walk", "rate_qps": 1}}], {}, "arrival process 'walk'"),
        ([{"name": "a", "arrival": {"process": "fixed", "rate_qps": 1}, "colour": 1}], {}, "unknown keys ['colour']"),
        ([{"name": "all", "arrival": {"process": "fixed", "rate_qps": 1}}], {}, "'all'"),
        ([{"name": "a", "arrival": {"process": "fixed", "rate_qps": 1}, "slo": "p99"}], {}, "expected pPERCENTILE"),
        ([{"name": "a", "arrival": {"process": "gamma", "rate_qps": 1, "burstiness": -1}}], {}, "burstiness=-1"),
        ([{"name": "a", "arrival": {"process": "fixed", "rate_qps": 1}}] * 2, {}, "repeated: a"),
        ([{"name": "a", "arrival": {"process": "fixed", "rate_qps": 1}}], {"target_qps": 5}, "rates per class"),
    ],
)
def test_bad_run_files_are_refused_in_one_line(tmp_path, capsys, classes, extra, message):
    config = _run_file(tmp_path, classes, **extra)
    assert main(["run", "--target", "127.0.0.1:1", "--model", "m", "--config", config]) == 2  # before connecting
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_a_mixed_scenario_needs_classes(capsys):
    assert main(["run", "--target", "127.0.0.1:1", "--model", "m", "--scenario", "mixed"]) == 2
    assert "needs its traffic classes" in capsys.readouterr().err


def test_a_class_on_its_own_target_with_deadlines(server, tmp_path):
    """A class naming its own target gets its own connection (here: the same server as localhost); a class's
    deadline is every request's timeout, and goodput counts the misses."""
    port = server.target.rsplit(":", 1)[1]
    classes = [
        {"name": "here", "arrival": {"process": "onoff", "rate_on_qps": 50, "rate_off_qps": 0, "mean_on_s": 0.2,
                                     "mean_off_s": 0.2}, "min_query_count": 1},
        # the sleep model takes 50 ms: a 10 ms deadline fails every request with DEADLINE_EXCEEDED
        {"name": "there", "target": f"localhost:{port}", "model": "sleep", "deadline": "10ms",
         "arrival": {"process": "fixed", "rate_qps": 10}, "min_query_count": 1},
    ]  # fmt: skip
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--config", _run_file(tmp_path, classes),
        "--out", str(out), "--no-progress", "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    found = scenario(results(out), "mixed")["classes"]
    expected = _expected_counts(classes)
    assert found["here"]["ok_count"] == expected["here"] > 0 and found["here"]["goodput"] is None  # no SLO
    assert found["there"]["errors"] == {"DEADLINE_EXCEEDED": expected["there"]}
    assert found["there"]["goodput"]["good_count"] == 0
    assert found["there"]["goodput"]["deadline_count"] == expected["there"] == 30
    assert found["all"]["goodput"]["classes"] == ["there"]  # "all" counts the classes that have an SLO


def test_class_schedules_from_every_process(tmp_path):
    trace = tmp_path / "t.jsonl"
    rows = [Arrival(i * 1_000_000, traffic_class="chat", batch_size=2 if i % 2 else 1) for i in range(10)]
    write_trace(trace, rows, time_unit="ms")
    specs = parse_classes([
        {"name": "g", "arrival": {"process": "gamma", "rate_qps": 1000, "burstiness": 0.5}, "batch_size": 4},
        {"name": "o", "arrival": {"process": "on-off", "rate_on_qps": 100, "rate_off_qps": 0, "mean_on_s": 1,
                                  "mean_off_s": 1}, "deadline": "0.25s"},
        {"name": "t", "arrival": {"process": "trace", "path": str(trace), "speed": 2}},
        {"name": "f", "arrival": {"process": "fixed-interval", "rate_qps": 4, "phase_ms": 100}, "slo": "p99.9<=2s"},
    ])  # fmt: skip
    gamma = list(itertools.islice(class_schedule(specs[0], 0, SEED, 4), 5000))
    assert {(a.traffic_class, a.batch_size) for a in gamma} == {("g", 4)}
    assert gamma[-1].offset_ns / 1e9 == pytest.approx(5.0, rel=0.1)  # 5,000 arrivals at 1,000/s
    assert gamma == list(itertools.islice(class_schedule(specs[0], 0, SEED, 4), 5000))  # seeded
    assert gamma != list(itertools.islice(class_schedule(specs[0], 1, SEED, 4), 5000))  # another place, another seed
    onoff = list(itertools.islice(class_schedule(specs[1], 1, SEED, 1), 50))
    assert {(a.traffic_class, a.deadline_ns) for a in onoff} == {("o", 250_000_000)}
    replay = list(class_schedule(specs[2], 2, SEED, 3))  # every row in the class; its own batches kept
    assert [(a.offset_ns, a.batch_size) for a in replay] == [(i * 500_000, 2 if i % 2 else 3) for i in range(10)]
    assert {a.traffic_class for a in replay} == {"t"}
    fixed = [a.offset_ns for a in itertools.islice(class_schedule(specs[3], 3, SEED, 1), 3)]
    assert fixed == [100_000_000, 350_000_000, 600_000_000]
    assert (specs[3].slo_percentile, specs[3].slo_bound_ms) == (99.9, 2000.0)
    # results.json records each class in the run file's own keys, and they read back the same
    assert parse_classes([s.to_dict() for s in specs]) == specs


def test_a_class_naming_a_model_the_target_lacks_is_refused_in_one_line(server, tmp_path):
    classes = [{"name": "probe", "model": "nope", "arrival": {"process": "fixed", "rate_qps": 1}}]
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--config", _run_file(tmp_path, classes),
        "--out", str(out), "--no-progress", "--no-calibration", "--no-host-probe",
    )  # fmt: skip
    assert run.returncode == 2 and not out.exists()
    assert run.stderr.strip().startswith("tailmark run: traffic class probe: ") and "'nope'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
