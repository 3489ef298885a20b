"""Peer check: AIPerf 0.13 and tailmark against the same OpenAI-compatible endpoint at the same rate.

Both clients run, one after the other, against one ``tailmark serve --http-port`` process serving ``synth-llm``
(or ``--target``): Poisson arrivals at ``--rate`` requests/s, streamed ``/v1/completions``, prompts of
``--input-tokens`` tokens, ``max_tokens`` = ``--output-tokens`` with ``ignore_eos``, token counts from the
server's usage. The table gives TTFT, time to second token, the inter-token figures and end-to-end latency
(p50/p90/p99, ms) as each tool reports them, and each client's CPU per request.

AIPerf runs in its own virtual environment (``--aiperf-venv``, default ``~/.cache/tailmark/aiperf-0.13.0``,
built with pip on first use: its pins may clash with tailmark's). It needs a tokenizer to build prompts; this
box has no network, so the script writes a local one (``tokenizers`` WordLevel over AIPerf's own Shakespeare
corpus, pre-tokenized by the same rule as tailmark's and the reference server's: up to four word characters
or one other character per token), so AIPerf's prompts have exactly ``--input-tokens`` tokens on the server.

What is compared, and where the two tools differ by definition:

- **TTFT**: AIPerf stamps from its own request start (``request_start_ns``), like tailmark's ``TTFT sent``;
  tailmark's headline ``TTFT`` counts from the intended instant of the Poisson schedule, so it also holds the
  client's own lateness (send lag). AIPerf's per-record ``credit_issued_ns`` (when its timing manager issued
  the request) is the nearest thing it has to an intended time; the table shows the p99 gap between the two
  (``AIPerf credit->start``) beside tailmark's send-lag p99.
- **Inter-token**: AIPerf's ``inter_token_latency`` is per request, (last token - first) / (tokens - 1), which
  is tailmark's ``TPOT``; its ``inter_chunk_latency`` is every gap, which is tailmark's ``ITL``. They are put
  on the same rows.
- **E2E**: AIPerf's ``request_latency`` is from its send; tailmark's ``e2e`` is from the intended instant.
- **CPU per request**: each client's whole process tree (user + system, from ``wait4``), including start-up
  (imports, prompt building; AIPerf's several service processes), divided by the requests it sent; and for
  tailmark also its CPU inside the measured window only (``client_cpu_pct`` x duration / requests).

Run by hand (the box is shared; both runs are brief)::

    python -m tailmark.bench.aiperf_peer --rate 10 --requests 200 --input-tokens 128 --output-tokens 32

Measured 2026-12-06 on this project's 2-core VM shared with other helpers' work (load average ~3-10, so the
tails are the host's as much as the clients'), server and both clients unpinned, one after the other::

    python -m tailmark.bench.aiperf_peer --rate 10 --requests 200 --input-tokens 128 --output-tokens 32 \\
        --aiperf-venv /tmp/aiperf-venv --out /tmp/peer1

    200 requests at 10/s Poisson, 128 in / 32 out, http://127.0.0.1:45557 (synth-llm)
    metric (ms: p50 / p90 / p99)                         tailmark                    AIPerf
    TTFT from the intended send             41.68 / 59.34 / 75.10            (not measured)
    TTFT from the send                      40.99 / 59.11 / 74.12     39.98 / 63.68 / 77.98
    time to second token                     9.62 / 35.49 / 40.21      8.13 / 36.02 / 43.32
    per-request TPOT (AIPerf: ITL)           9.66 / 13.68 / 16.77      9.52 / 14.60 / 16.83
    every gap (AIPerf: inter-chunk)          7.99 / 18.01 / 37.78      7.74 / 27.28 / 38.99
    E2E (tailmark from intended)         343.67 / 479.72 / 574.10  341.25 / 498.64 / 574.49
    send lag p99 (AIPerf credit->start)                      4.73                      3.90
    requests                                                  200                       200
    input tokens served (mean)                              128.0                     128.0
    client CPU ms/request (whole run)                       26.65                     59.37
    client CPU ms/request (window)                           5.83                         -
    wall s (with start-up)                                   29.5                      45.2

Reading it: where both measure the same thing they agree within the run-to-run noise of two separate ~20 s
Poisson samples on a busy host (different arrivals, different neighbours): TTFT from the send p50 41.0 vs
40.0 ms (the model's prefill for 128 tokens is 26.4 ms, the rest is batching with the requests in flight and
the host), TPOT p50 9.7 vs 9.5 ms, e2e p99 574 vs 574 ms; both saw 128 input tokens per request on the server.
The gaps differ most at p90 (18 vs 27 ms): a prefill step stalls every sequence decoding in it, so the gap
distribution's shoulder depends on how many arrivals overlapped, i.e. on the two samples, not on the clients.
At 10/s neither client was late: tailmark's TTFT from the intended send is only ~1 ms above its TTFT from the
send (send lag p99 4.7 ms, the host's wake-ups), and AIPerf's credit -> start gap is of the same size; under
a cap or a saturated client the intended-time row is the one that would keep the wait (AIPerf has none).
Percentiles differ in method too: tailmark reads HDR buckets with LoadGen's rank rule (the bucket's upper
edge, 3 significant digits), AIPerf interpolates between raw samples (numpy), so equal data can differ in the
third digit. CPU: AIPerf runs a controller, a timing manager, a dataset manager, workers and record
processors as separate processes (ZMQ between them); its whole tree used 59 ms of CPU a request against
tailmark's 27 ms, both including what is not the window (tailmark: imports, prompts, and the HTML report and
plots written at the end, about 4.2 s of its 5.3 s);
inside the measured window tailmark used 5.8 ms a request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tailmark.client.embedded import EmbeddedServer

AIPERF_VERSION = "0.13.0"
DEFAULT_VENV = Path.home() / ".cache" / "tailmark" / f"aiperf-{AIPERF_VERSION}"

TOKENIZER_SCRIPT = textwrap.dedent(
    r"""
    import re, string, sys
    from pathlib import Path
    import aiperf
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    corpus = (Path(aiperf.__file__).parent / "dataset/generator/assets/shakespeare.txt").read_text()
    rule = r"\w{1,4}|[^\w\s]"  # tailmark's count_tokens and the reference server's tokenizer
    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate(string.punctuation)}}
    for piece in re.findall(rule, corpus):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(rule), "isolated")]
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(sys.argv[1])
    """
)


def ensure_aiperf(venv: Path) -> Path:
    """The aiperf executable in ``venv``, installing aiperf there with pip the first time."""
    exe = venv / "bin" / "aiperf"
    if not exe.exists():
        print(f"installing aiperf {AIPERF_VERSION} into {venv} (first use) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"aiperf=={AIPERF_VERSION}"], check=True)
    return exe


def run_measured(command: list[str], env: dict | None = None, log: Path | None = None) -> tuple[int, float, float]:
    """Run ``command``; its exit status, wall seconds and CPU seconds of its whole process tree (wait4)."""
    start = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def run_tailmark(args, target: str, out: Path) -> dict:
    duration = args.requests / args.rate
    command = [
        sys.executable, "-m", "tailmark", "run", "--target", target, "--transport", "openai", "--model", args.model,
        "--scenario", "poisson", "--target-qps", str(args.rate), "--duration", f"{duration:g}",
        "--max-queries", str(args.requests), "--min-queries", str(args.requests), "--warmup", "0",
        "--input-tokens", str(args.input_tokens), "--output-tokens", str(args.output_tokens), "--ignore-eos",
        "--no-calibration", "--no-progress", "--no-host-probe", "--out", str(out / "tailmark"),
    ]  # fmt: skip
    rc, wall, cpu = run_measured(command, log=out / "tailmark.log")
    if rc != 0:
        sys.exit(f"tailmark run failed ({rc}): see {out / 'tailmark.log'}")
    doc = json.loads((out / "tailmark" / "results.json").read_text())
    scenario = doc["scenarios"][0]
    total = scenario["classes"]["all"]
    lat = total["tokens"]["latency_ms"]
    requests = total["query_count"]
    in_window = (scenario["client_cpu_pct"] or 0) / 100 * scenario["duration_s"]
    return {
        "requests": requests,
        "ttft": lat["ttft"],
        "ttft_sent": lat["ttft_sent"],
        "ttst": lat["ttst"],
        "tpot": lat["tpot"],
        "itl": lat["itl"],
        "e2e": lat["e2e"],
        "lag_p99": total["latency_ms"]["send_lag"]["p99"],
        "input_tokens": total["tokens"]["input_tokens"]["mean"],
        "cpu_ms_per_request": 1000 * cpu / requests,
        "window_cpu_ms_per_request": 1000 * in_window / requests,
        "wall_s": wall,
    }


def run_aiperf(args, target: str, out: Path) -> dict:
    exe = ensure_aiperf(args.aiperf_venv)
    tokenizer = out / "tokenizer"
    subprocess.run([str(exe.parent / "python"), "-c", TOKENIZER_SCRIPT, str(tokenizer)], check=True,
                   capture_output=True)  # fmt: skip
    artifacts = out / "aiperf"
    command = [
        str(exe), "profile", "-m", args.model, "--url", target, "--endpoint-type", "completions", "--streaming",
        "--tokenizer", str(tokenizer), "--request-rate", str(args.rate), "--arrival-pattern", "poisson",
        "--request-count", str(args.requests), "--prompt-input-tokens-mean", str(args.input_tokens),
        "--prompt-input-tokens-stddev", "0", "--prompt-output-tokens-mean", str(args.output_tokens),
        "--prompt-output-tokens-stddev", "0", "--extra-inputs", "ignore_eos:true", "--use-server-token-count",
        "--output-artifact-dir", str(artifacts), "--random-seed", "1", "--ui-type", "none",
        "--no-gpu-telemetry", "--no-server-metrics",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
    rc, wall, cpu = run_measured(command, env=env, log=out / "aiperf.log")
    if rc != 0:
        sys.exit(f"aiperf failed ({rc}): see {out / 'aiperf.log'}")
    doc = json.loads((artifacts / "profile_export_aiperf.json").read_text())
    lag = []
    for line in (artifacts / "profile_export.jsonl").read_text().splitlines():
        meta = json.loads(line).get("metadata", {})
        if meta.get("credit_issued_ns") and meta.get("request_start_ns"):
            lag.append((meta["request_start_ns"] - meta["credit_issued_ns"]) / 1e6)
    lag.sort()
    requests = int(doc["request_count"]["avg"])
    return {
        "requests": requests,
        "ttft_sent": doc["time_to_first_token"],
        "ttst": doc["time_to_second_token"],
        "tpot": doc["inter_token_latency"],
        "itl": doc["inter_chunk_latency"],
        "e2e_sent": doc["request_latency"],
        "lag_p99": lag[min(len(lag) - 1, int(0.99 * len(lag)))] if lag else None,
        "input_tokens": doc["input_sequence_length"]["avg"],
        "cpu_ms_per_request": 1000 * cpu / requests,
        "wall_s": wall,
    }


def _cell(stats: dict | None) -> str:
    if not stats:
        return "-"
    return " / ".join("-" if stats.get(k) is None else f"{stats[k]:.2f}" for k in ("p50", "p90", "p99"))


def table(t: dict, a: dict) -> str:
    rows = [
        ("metric (ms: p50 / p90 / p99)", "tailmark", "AIPerf"),
        ("TTFT from the intended send", _cell(t["ttft"]), "(not measured)"),
        ("TTFT from the send", _cell(t["ttft_sent"]), _cell(a["ttft_sent"])),
        ("time to second token", _cell(t["ttst"]), _cell(a["ttst"])),
        ("per-request TPOT (AIPerf: ITL)", _cell(t["tpot"]), _cell(a["tpot"])),
        ("every gap (AIPerf: inter-chunk)", _cell(t["itl"]), _cell(a["itl"])),
        ("E2E (tailmark from intended)", _cell(t["e2e"]), _cell(a["e2e_sent"])),
        ("send lag p99 (AIPerf credit->start)", f"{t['lag_p99']:.2f}", f"{a['lag_p99']:.2f}"),
        ("requests", str(t["requests"]), str(a["requests"])),
        ("input tokens served (mean)", f"{t['input_tokens']:.1f}", f"{a['input_tokens']:.1f}"),
        ("client CPU ms/request (whole run)", f"{t['cpu_ms_per_request']:.2f}", f"{a['cpu_ms_per_request']:.2f}"),
        ("client CPU ms/request (window)", f"{t['window_cpu_ms_per_request']:.2f}", "-"),
        ("wall s (with start-up)", f"{t['wall_s']:.1f}", f"{a['wall_s']:.1f}"),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", help="http://HOST:PORT of an OpenAI-compatible server (default: start one)")
    parser.add_argument("--model", default="synth-llm")
    parser.add_argument("--rate", type=float, default=10.0, help="Poisson arrivals per second, both clients")
    parser.add_argument("--requests", type=int, default=200, help="requests each client sends")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--aiperf-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--out", type=Path, help="keep both clients' outputs here (default: a temporary folder)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        out = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiperf-peer-")))
        out.mkdir(parents=True, exist_ok=True)
        target = args.target or stack.enter_context(EmbeddedServer(None, http=True)).target_for("openai")
        t = run_tailmark(args, target, out)
        a = run_aiperf(args, target, out)
        shape = f"{args.input_tokens} in / {args.output_tokens} out"
        print(f"{args.requests} requests at {args.rate:g}/s Poisson, {shape}, {target} ({args.model})")
        print(table(t, a))


if __name__ == "__main__":
    main()
