"""``tailmark compare``: the rank test against hand-computed values, and two real runs of a fast and a 50 ms model."""

from __future__ import annotations

import copy
import math

import pytest

from support.runcli import tailmark
from tailmark.client.compare import compare_runs, mann_whitney
from tailmark.client.results import load_results


def test_mann_whitney_exact_p_values() -> None:
    """Fully separated samples: only the observed split and its mirror are as extreme, p = 2 / C(n, k)."""
    assert mann_whitney([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / math.comb(8, 4))  # 0.029
    assert mann_whitney([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)  # 3 vs 3 can never reach 5 %
    assert mann_whitney([1, 1], [1, 1]) == 1.0  # all ties: no evidence at all
    assert mann_whitney([1, 3, 5, 7], [2, 4, 6, 8]) > 0.5  # interleaved
    # one pair swapped: U = 1 of 16; splits with rank sum at least as far from 18 are 4 of 70
    assert mann_whitney([1, 2, 3, 5], [4, 6, 7, 8]) == pytest.approx(4 / 70)


def _run(server, out, model: str, *extra: str) -> None:
    run = tailmark(
        "run", "--target", server.target, "--model", model, "--scenario", "poisson", "--target-qps", "20",
        "--duration", "1", "--warmup", "0", "--min-queries", "10", "--out", str(out), "--no-progress",
        "--no-calibration", *extra,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


def _rows(stdout: str) -> dict[tuple[str, str, str], list[str]]:
    """(scenario, class, metric) -> the rest of the row, split on runs of two or more spaces."""
    out = {}
    for line in stdout.splitlines()[2:]:
        if not line.strip():
            break
        cells = [c for c in line.split("  ") if c.strip()]
        cells = [c.strip() for c in cells]
        out[(cells[0], cells[1], cells[2])] = cells[3:]
    return out


def test_compare_single_runs_and_repeats(tmp_path, server) -> None:
    fast, slow, fast_again = tmp_path / "fast", tmp_path / "slow", tmp_path / "fast2"
    _run(server, fast, "identity")
    _run(server, slow, "sleep")  # 50 ms a request
    compared = tailmark("compare", str(fast), str(slow), "--html", str(tmp_path / "c.html"))
    assert compared.returncode == 0, compared.stderr
    rows = _rows(compared.stdout)
    a, b, diff, _, significant, test = rows[("poisson", "all", "p50 ms")]
    assert float(b) - float(a) == pytest.approx(float(diff), abs=2e-3) and float(diff) > 45
    assert significant == "YES" and test == "intervals"
    fast_doc = load_results(fast / "results.json")
    assert float(a) == pytest.approx(
        fast_doc["scenarios"][0]["classes"]["all"]["latency_ms"]["intended_to_done"]["p50"], abs=5e-4
    )
    page = (tmp_path / "c.html").read_text()
    assert "<table>" in page and "class='sig'" in page and str(fast) in page
    # a run against itself: nothing is significant
    same = compare_runs(fast_doc, fast_doc)
    assert same.rows and not any(r.significant for r in same.rows)
    assert {r.metric for r in same.rows} == {"rate/s", "p50 ms", "p90 ms", "p95 ms", "p97 ms", "p99 ms", "p99.9 ms"}
    assert not same.notes
    other = copy.deepcopy(fast_doc)
    other["scenarios"][0]["settings"]["effective"].update(target_qps=40.0, schedule_seed=99)
    assert compare_runs(fast_doc, other).notes == (
        "poisson: settings differ (target_qps 20.0 vs 40.0): the runs offered different loads or rules",
    )

    # four repeats a side: the exact rank test can reach 5 % (p = 2/70 when the two sets do not interleave)
    _run(server, fast_again, "identity", "--repeat", "4")
    _run(server, slow / "r", "sleep", "--repeat", "4")
    repeated = tailmark("compare", str(fast_again), str(slow / "r"))
    assert repeated.returncode == 0, repeated.stderr
    a, _, _, _, significant, test = _rows(repeated.stdout)[("poisson", "all", "p50 ms")]
    assert significant == "YES" and test == "mann-whitney p=0.0286"
    medians = load_results(fast_again / "results.json")["repeats"]["summary"][0]["latency_ms"]["p50"]
    assert float(a) == pytest.approx(medians["median"], abs=1e-3)
    assert "A: " in repeated.stdout and "(4 repeats)" in repeated.stdout
    # separate runs given as lists count as repeats (the same run four times: fully separated sets)
    listed = tailmark("compare", ",".join([str(fast)] * 4), ",".join([str(slow)] * 4))
    assert listed.returncode == 0, listed.stderr
    assert _rows(listed.stdout)[("poisson", "all", "p50 ms")][4:] == ["YES", "mann-whitney p=0.0286"]
    assert ("poisson", "default", "p50 ms") not in _rows(listed.stdout)  # a lone class is "all" again
    nested = tailmark("compare", f"{fast},{fast_again}", str(slow))
    assert nested.returncode == 2 and len(nested.stderr.strip().splitlines()) == 1
    assert "was made with --repeat" in nested.stderr
    # one side repeated, the other not: shown, but not tested
    mixed = tailmark("compare", str(fast), str(slow / "r"))
    assert mixed.returncode == 0 and "one side not repeated" in mixed.stdout


def test_compare_refuses_different_scenarios_in_one_line(tmp_path, server) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _run(server, a, "identity")
    run = tailmark(
        "run", "--target", server.target, "--model", "identity", "--scenario", "fixed-interval", "--target-qps",
        "20", "--duration", "1", "--warmup", "0", "--min-queries", "10", "--out", str(b), "--no-progress",
        "--no-calibration",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    refused = tailmark("compare", str(a), str(b))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"tailmark compare: {a} ran poisson; {b} ran fixed-interval: compare needs the same scenarios"
    ]
    missing = tailmark("compare", str(a), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
