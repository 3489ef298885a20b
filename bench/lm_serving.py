"""The served language model (backend ``tiny_lm``) with and without continuous batching, measured by tailmark's
own client over the OpenAI route, every figure from one run.

One server process holds the same weights twice: ``lm`` (continuous batching, 16 KV-cache slots) and
``lm-serial`` (``continuous_batching: false``: one sequence at a time, each to its end, the rest queued). Then:

1. Tokens/s at 1, 4 and 16 concurrent streams: ``tailmark run --transport openai --scenario concurrency
   --concurrency N`` (closed loop, streamed, ``--ignore-eos``), output tokens as the server's usage counts them
   (bytes), per second of the measured window; the ratio continuous / one-at-a-time at each N.
2. TTFT and ITL at a Poisson rate: ``--scenario server --target-qps R`` on both models, p50 and p99 of the time
   to first token and of the gaps between tokens (inter-token latency), and their ratios. R defaults to 1.5x the
   request rate one-at-a-time decoding sustains (measured in step 1 at N=1): a load continuous batching carries
   and serial decoding cannot, so its queue grows for the whole window and its TTFT with it.

The model is the lm workload's benchmark size (d_model 96, 3 layers, context 64) with seeded untrained weights,
as the default repository's ``tiny-lm`` (a step costs the same trained or not), or ``--export DIR`` for a trained
export. Prompts: ``--input-tokens 4`` of tailmark's prompt pool (about 15-25 bytes), ``--output-tokens 32``.

    python -m tailmark.bench.lm_serving [--duration 8] [--rate R] [--export DIR] [--device cpu|cuda]

Measured on 2026-12-06, CPU, the 2-core VM shared with other sessions' builds and tests (load average 5-6 during
the run), ``--duration 8``, seeded weights:

    streams  continuous tok/s  one-at-a-time tok/s  ratio
          1             277.7                201.7   1.38   (the same work: the gap is the box's noise)
          4             423.5                199.6   2.12
         16             817.6                169.8   4.82
    Poisson 9.5 requests/s (one-at-a-time sustains 6.3/s), ms:
         model  TTFT p50  TTFT p99  ITL p50  ITL p99
            lm      26.1      79.1     8.03    36.21
     lm-serial    7184.8    9512.7     5.28    23.89
    one-at-a-time / continuous: TTFT p50 274.9x, p99 120.3x; ITL p50 0.66x

Continuous batching multiplies tokens/s with the streams (4.8x at 16) and keeps TTFT near one step at a load that
one-at-a-time decoding cannot carry (its queue, and TTFT, grow all window); the price is a longer gap between a
sequence's tokens (ITL p50 8.0 vs 5.3 ms), as each step now carries several sequences. docs/lm.md has the same.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

ARCHITECTURE = {"d_model": 96, "nhead": 4, "layers": 3, "ff": 384, "context": 64}
STREAMS = (1, 4, 16)
MODELS = {"lm": {"max_num_seqs": "16"}, "lm-serial": {"continuous_batching": "false"}}


def build_repository(root: Path, export: Path | None, device: str) -> None:
    import torch

    from tailmark.models.tiny_lm import TinyLM
    from tailmark.training.workloads.lm.export import write_export

    for name, parameters in MODELS.items():
        if export is not None:
            shutil.copytree(export, root / name)
            (root / name / "config.pbtxt").write_text(
                (root / name / "config.pbtxt").read_text().replace(f'name: "{export.name}"', f'name: "{name}"')
            )
        else:
            torch.manual_seed(0)
            write_export(TinyLM(**ARCHITECTURE).eval(), root / name, ARCHITECTURE)
        extra = {**parameters, "device": device}
        with (root / name / "config.pbtxt").open("a") as config:
            for key, value in extra.items():
                config.write(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n')


def run(target: str, model: str, out: Path, duration: float, *scenario: str) -> dict:
    command = [
        sys.executable, "-m", "tailmark", "run", "--target", target, "--transport", "openai", "--model", model,
        "--input-tokens", "4", "--output-tokens", "32", "--ignore-eos", "--duration", str(duration),
        "--warmup", "1", "--no-progress", "--no-calibration", "--out", str(out), *scenario,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration * 10 + 120)
    if done.returncode not in (0, 3):  # 3: INVALID (a bound missed): still measured
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    document = json.loads((out / "results.json").read_text())
    [entry] = document["scenarios"]
    everything = entry["classes"]["all"]
    if everything["error_count"]:
        raise SystemExit(f"{model}: {everything['error_count']} failed requests: {everything['errors']}")
    return everything


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per step (default 8)")
    parser.add_argument("--rate", type=float, help="Poisson requests/s (default: 1.5x serial's rate at 1 stream)")
    parser.add_argument("--export", type=Path, help="a trained lm export to serve instead of seeded weights")
    parser.add_argument("--device", default="cpu", help="the models' device parameter (default cpu)")
    args = parser.parse_args()

    from support.serve import ServerProcess

    work = Path(tempfile.mkdtemp(prefix="lm-serving-"))
    try:
        build_repository(work / "repo", args.export, args.device)
        with ServerProcess(work / "repo", "--http-port", "0") as server:
            target = f"http://{server.rest_address}"
            print(f"server {target}; model: {'export ' + str(args.export) if args.export else 'seeded, untrained'}")
            rates: dict[tuple[str, int], float] = {}
            requests_per_s: dict[str, float] = {}
            print(f"{'streams':>7} {'continuous tok/s':>17} {'one-at-a-time tok/s':>20} {'ratio':>6}")
            for streams in STREAMS:
                for model in MODELS:
                    out = work / f"{model}-c{streams}"
                    result = run(target, model, out, args.duration, "--scenario", "concurrency",
                                 "--concurrency", str(streams))  # fmt: skip
                    rates[model, streams] = result["tokens"]["output_tokens_per_s"]
                    if streams == 1:
                        requests_per_s[model] = result["tokens"]["requests"] / result["duration_s"]
                ratio = rates["lm", streams] / rates["lm-serial", streams]
                print(f"{streams:>7} {rates['lm', streams]:>17.1f} {rates['lm-serial', streams]:>20.1f} {ratio:>6.2f}")
            rate = args.rate or round(1.5 * requests_per_s["lm-serial"], 1)
            print(f"\nPoisson {rate} requests/s (one-at-a-time sustains {requests_per_s['lm-serial']:.1f}/s)")
            print(f"{'model':>10} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8}  (ms)")
            timing = {}
            for model in MODELS:
                result = run(target, model, work / f"{model}-poisson", args.duration, "--scenario", "server",
                             "--target-qps", str(rate), "--latency-bound-ms", "100000")  # fmt: skip
                latency = result["tokens"]["latency_ms"]
                timing[model] = {
                    key: latency[metric][pct]
                    for key, metric, pct in (("ttft50", "ttft", "p50"), ("ttft99", "ttft", "p99"),
                                             ("itl50", "itl", "p50"), ("itl99", "itl", "p99"))
                }  # fmt: skip
                t = timing[model]
                print(f"{model:>10} {t['ttft50']:>9.1f} {t['ttft99']:>9.1f} {t['itl50']:>8.2f} {t['itl99']:>8.2f}")
            serial, continuous = timing["lm-serial"], timing["lm"]
            ttft = serial["ttft50"] / continuous["ttft50"], serial["ttft99"] / continuous["ttft99"]
            itl = serial["itl50"] / continuous["itl50"]
            print(f"one-at-a-time / continuous: TTFT p50 {ttft[0]:.1f}x, p99 {ttft[1]:.1f}x; ITL p50 {itl:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
