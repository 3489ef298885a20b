"""The recorder: metrics, errors, clamping, merging (in and across processes), serialisation and interval logs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hdrh.log import HistogramLogReader

from tailmark.client import hlog, recorder
from tailmark.client.recorder import DEADLINE_EXCEEDED, METRICS, Recorder, RecorderFormatError

KEY = ("server", "default")
T0 = 5_000_000_000_000  # an arbitrary perf_counter_ns origin


def requests(n: int, seed: int, rate_qps: float = 1000.0) -> np.ndarray:
    """(intended, sent, done) stamps of n Poisson arrivals with ~0.1 ms send lag and ~1 ms lognormal latency."""
    rng = np.random.default_rng(seed)
    intended = T0 + np.cumsum(rng.exponential(1e9 / rate_qps, n)).astype(np.int64)
    sent = intended + rng.exponential(1e5, n).astype(np.int64)
    done = sent + rng.lognormal(np.log(1e6), 1.2, n).astype(np.int64)
    return np.stack([intended, sent, done], axis=1)


def feed(rec: Recorder, key, stamps: np.ndarray) -> None:
    for intended, sent, done in stamps.tolist():
        rec.record(key, intended, sent, done)


def reference(values: np.ndarray):
    h = hlog.new_histogram()
    for v in values.tolist():
        assert h.record_value(v)
    return h


def test_three_metrics_equal_one_by_one_histograms(assert_same_histogram) -> None:
    stamps = requests(20_000, 1)
    rec = Recorder()
    feed(rec, KEY, stamps)
    intended, sent, done = stamps.T
    for metric, values in zip(METRICS, (done - intended, done - sent, sent - intended), strict=True):
        assert_same_histogram(rec.histogram(KEY, metric), reference(values))
    assert rec.keys() == [KEY]
    assert rec.overflow(KEY) == Counter() and rec.underflow(KEY) == Counter()


def test_errors_are_counted_never_recorded_as_latency() -> None:
    rec = Recorder()
    feed(rec, KEY, requests(100, 2))
    for _ in range(7):
        rec.record_error(KEY, "UNAVAILABLE")
    for _ in range(3):
        rec.record_error(KEY, DEADLINE_EXCEEDED)
    rec.record_error(("server", "probe"), "RESOURCE_EXHAUSTED")  # a key with only errors
    for metric in METRICS:
        assert rec.histogram(KEY, metric).get_total_count() == 100
        assert rec.histogram(("server", "probe"), metric).get_total_count() == 0
    assert rec.errors(KEY) == Counter({"UNAVAILABLE": 7, "DEADLINE_EXCEEDED": 3})
    assert rec.errors(("server", "all")) == Counter({"UNAVAILABLE": 7, "DEADLINE_EXCEEDED": 3, "RESOURCE_EXHAUSTED": 1})


def test_out_of_range_values_are_clamped_and_counted() -> None:
    rec = Recorder()
    hour = hlog.HIGHEST_NS
    rec.record(KEY, T0, T0 - 500, T0 + 1_000)  # sent 500 ns early: negative send lag
    rec.record(KEY, T0, T0 + 10, T0 + 2 * hour)  # two hours late
    rec.record(KEY, T0, T0 + 10, T0 + 20)
    assert rec.underflow(KEY) == Counter({"send_lag": 1})
    assert rec.overflow(KEY) == Counter({"intended_to_done": 1, "sent_to_done": 1})
    for metric in METRICS:
        assert rec.histogram(KEY, metric).get_total_count() == 3  # nothing dropped
    assert rec.histogram(KEY, "send_lag").get_min_value() == 0
    top = rec.histogram(KEY, "intended_to_done")
    assert top.get_max_value() == top.get_highest_equivalent_value(hour)


def test_buffer_is_bounded_without_flush() -> None:
    rec = Recorder()
    feed(rec, KEY, requests(3 * recorder.FLUSH_EVERY + 10, 3))
    assert len(rec._pending[KEY]) <= 3 * recorder.FLUSH_EVERY  # record() flushed by itself
    assert rec.histogram(KEY).get_total_count() == 3 * recorder.FLUSH_EVERY + 10


def test_bad_keys_are_refused_on_first_use() -> None:
    rec = Recorder()
    for key in (("a,b", "c"), ("a", "c d"), ("a/b", "c"), ("a", "all")):
        with pytest.raises(ValueError):
            rec.record(key, 1, 2, 3)
    with pytest.raises(KeyError, match="metric 'p99'"):
        rec.histogram(KEY, "p99")


def test_all_aggregate_merges_classes_on_demand(assert_same_histogram) -> None:
    rec = Recorder()
    a, b = requests(3000, 4), requests(2000, 5, rate_qps=50.0)
    feed(rec, ("server", "bg"), a)
    feed(rec, ("server", "probe"), b)
    feed(rec, ("other", "bg"), requests(10, 6))
    both = np.concatenate([a, b])
    assert_same_histogram(rec.histogram(("server", "all")), reference(both[:, 2] - both[:, 0]))
    assert rec.histogram(("server", "bg")).get_total_count() == 3000  # the classes were not touched


def test_merge_of_halves_equals_one_recorder(assert_same_histogram) -> None:
    stamps = requests(40_000, 7)
    whole, first, second = Recorder(), Recorder(), Recorder()
    feed(whole, KEY, stamps)
    feed(first, KEY, stamps[::2])
    feed(second, KEY, stamps[1::2])
    feed(second, ("server", "probe"), stamps[:10])
    feed(whole, ("server", "probe"), stamps[:10])
    whole.record_error(KEY, "UNAVAILABLE")
    whole.record_error(KEY, "UNAVAILABLE")
    first.record_error(KEY, "UNAVAILABLE")
    second.record_error(KEY, "UNAVAILABLE")
    merged = recorder.merged([first, second])
    for key in (KEY, ("server", "probe"), ("server", "all")):
        for metric in METRICS:
            assert_same_histogram(merged.histogram(key, metric), whole.histogram(key, metric))
    assert merged.errors(KEY) == whole.errors(KEY) == Counter({"UNAVAILABLE": 2})


def test_dict_round_trip_through_json(assert_same_histogram) -> None:
    rec = Recorder()
    feed(rec, KEY, requests(5000, 8))
    rec.record(KEY, T0, T0 - 1, T0 + 5)
    rec.record_error(KEY, DEADLINE_EXCEEDED)
    loaded = Recorder.from_dict(json.loads(json.dumps(rec.to_dict())))
    for metric in METRICS:
        assert_same_histogram(loaded.histogram(KEY, metric), rec.histogram(KEY, metric))
    assert loaded.errors(KEY) == Counter({DEADLINE_EXCEEDED: 1})
    assert loaded.underflow(KEY) == Counter({"send_lag": 1})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("unit"), r"missing fields \['unit'\]"),
        (lambda d: d.update(format="other/9"), r"format 'other/9'"),
        (lambda d: d.update(series={}), r"recorder.series must be list"),
        (lambda d: d["series"][0]["histograms"].update(send_lag="bm90IGhkcg=="), r"histograms.send_lag: cannot decode"),
        (lambda d: d["series"][0]["histograms"].pop("send_lag"), r"series\[0\].histograms has"),
        (lambda d: d["series"][0]["errors"].update(UNAVAILABLE=-1), r"series\[0\].errors must map"),
        (lambda d: d["series"][0].update(traffic_class="a,b"), r"series\[0\]: hlog tag"),
        (lambda d: d["series"][0].update(extra=1), r"unknown fields \['extra'\]"),
    ],
)
def test_from_dict_refuses_malformed(mutate, message: str) -> None:
    rec = Recorder()
    feed(rec, KEY, requests(10, 9))
    rec.record_error(KEY, "UNAVAILABLE")
    data = json.loads(json.dumps(rec.to_dict()))
    mutate(data)
    with pytest.raises(RecorderFormatError, match=message):
        Recorder.from_dict(data)


def test_interval_log_round_trip(tmp_path) -> None:
    path = tmp_path / "run.hlog"
    rec = Recorder(hlog_path=path, interval_s=1.0, start_ns=T0, start_time_s=1_700_000_000.0)
    keys = [("server", "bg"), ("server", "probe")]
    per_interval = [[0, 0], [0, 0], [0, 0]]
    rng = np.random.default_rng(10)
    for second in range(3):
        for i, key in enumerate(keys):
            n = int(rng.integers(1, 500))
            per_interval[second][i] = n
            for intended in (T0 + second * 10**9 + np.sort(rng.integers(0, 9 * 10**8, n))).tolist():
                rec.record(key, intended, intended + 1000, intended + 50_000)
        assert not rec.tick(T0 + second * 10**9 + 999_999_999)
        assert rec.tick(T0 + (second + 1) * 10**9)
    rec.record_error(keys[0], "UNAVAILABLE")  # not an interval count
    rec.close(T0 + 3 * 10**9 + 250_000_000)  # a last partial interval, empty

    reader = HistogramLogReader(str(path), hlog.new_histogram())
    seen = []
    try:
        while (h := reader.get_next_interval_histogram(range_start_time_sec=-1.0)) is not None:
            seen.append((h.get_tag(), round(h.get_start_time_stamp() / 1000 - 1_700_000_000.0, 3), h.get_total_count()))
    finally:
        reader.close()
    expected = []
    for second, start in enumerate([0.0, 1.0, 2.0, 3.0]):
        for i, (scenario, cls) in enumerate(keys):
            count = per_interval[second][i] if second < 3 else 0
            expected += [(f"{scenario}/{cls}/{metric}", start, count) for metric in METRICS]
    assert seen == expected
    lengths = {round(i.length_s, 6) for i in hlog.read_hlog(path)}
    assert lengths == {1.0, 0.25}


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from tailmark.client.recorder import Recorder
    seed, out = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(seed)
    rec = Recorder(hlog_path=out + ".hlog", start_ns=0, start_time_s=1_700_000_000.0)
    for second in range(2):
        for i in range(3000):
            intended = second * 10**9 + i * 300_000
            latency = int(rng.lognormal(np.log(1e6), 1.0))
            rec.record(("server", "default"), intended, intended + 100, intended + latency)
        rec.tick((second + 1) * 10**9)
    rec.record_error(("server", "default"), "UNAVAILABLE")
    with open(out + ".json", "w") as f:
        json.dump(rec.to_dict(), f)
    os._exit(0)  # killed without close(): the .hlog must already hold both intervals
    """
)


def test_two_processes_merge_into_one_histogram(tmp_path, assert_same_histogram) -> None:
    outs = [str(tmp_path / f"worker{seed}") for seed in (1, 2)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(seed), out]) for seed, out in zip((1, 2), outs)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    # the latencies each worker drew, recomputed here
    latencies = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        latencies += [int(rng.lognormal(np.log(1e6), 1.0)) for _ in range(6000)]
    expected = reference(np.array(latencies, dtype=np.int64))

    loaded = [Recorder.from_dict(json.loads(Path(out + ".json").read_text())) for out in outs]
    merged = recorder.merged(loaded)
    assert_same_histogram(merged.histogram(KEY, "intended_to_done"), expected)
    assert merged.errors(KEY) == Counter({"UNAVAILABLE": 2})

    from_logs = hlog.new_histogram()
    intervals = 0
    for out in outs:
        for interval in hlog.read_hlog(out + ".hlog"):
            if interval.tag == "server/default/intended_to_done":
                hlog.add_into(from_logs, interval.histogram)
                intervals += 1
    assert intervals == 4
    assert_same_histogram(from_logs, expected)


def test_a_retired_scenario_writes_no_more_intervals(tmp_path) -> None:
    path = tmp_path / "run.hlog"
    rec = Recorder(hlog_path=path, interval_s=1.0, start_ns=T0, start_time_s=1_700_000_000.0)
    rec.record(("first", "default"), T0, T0 + 10, T0 + 1000)
    rec.retire("first", T0 + 500_000_000)  # its last, partial interval is written now
    for second in range(1, 4):
        rec.record(("second", "default"), T0 + second * 10**9, T0 + second * 10**9 + 10, T0 + second * 10**9 + 999)
        assert rec.tick(T0 + second * 10**9 + 500_000_000)
    rec.close(T0 + 4 * 10**9)
    tags = [i.tag.split("/")[0] for i in hlog.read_hlog(path)]
    assert tags.count("first") == len(METRICS)  # one interval, then nothing while "second" ran
    assert tags.count("second") == 4 * len(METRICS)
    assert rec.histogram(("first", "default")).get_total_count() == 1  # its totals stay
