"""The server's CUDA backends on the reference ResNet with a batch-size sweep, as one prepared script.

Variants: PyTorch (TorchScript) eager, PyTorch with CUDA graphs at the swept sizes, ONNX Runtime (its CUDA
provider when the installed onnxruntime has one; the provider used is printed), and a TensorRT plan when
TensorRT imports. Each is exported into one repository with KIND_GPU instances and no dynamic batching
(requests arrive already batched), and for each batch size the script measures

  backend   the backend's ``execute`` alone in this process: samples/s, p50 and p99 per batch
  served    a ``tailmark serve`` process driven closed-loop over gRPC (tailmark's h2 transport) with
            requests of that batch size, ``--concurrency`` in flight: samples/s, p50 and p99 latency

and, as the baseline measured in the same run, PyTorch eager on this machine's CPU (``--cpu-baseline``,
backend only), giving a GPU/CPU throughput ratio per batch size. Without a CUDA device it says so and
exits 0; ``--device cpu`` runs the whole sweep on the CPU instead (a smoke run of the script itself).
Results are printed as they come and rewritten to ``--output``/server_gpu.json after every measurement.

    python bench/server_gpu.py --output "$OUT" --batch-sizes 1 8 32 128 --seconds 2 --budget-s 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODEL = "resnet"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight when served")
    parser.add_argument("--cpu-baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--budget-s", type=float, default=0.0, help="start no measurement after this (0: none)")
    parser.add_argument("--output", type=Path, default=Path(os.environ.get("OUT", "runs/server_gpu")))
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.seconds <= 0 or args.concurrency < 1:
        parser.error("--batch-sizes >= 1, --seconds > 0, --concurrency >= 1")
    return args


def build_repository(root: Path, device: str, sizes: list[int]) -> list[str]:
    """The variants' models in one repository; returns their names."""
    from tailmark.models.export import Batching, export_reference, tensorrt_available, write_config

    batching = Batching(max_batch_size=max(sizes), dynamic=False, gpu=device == "cuda")
    formats = ("torchscript", "onnx") + (("tensorrt",) if device == "cuda" and tensorrt_available() else ())
    names = [folder.name for folder in export_reference(MODEL, root, batching, formats=formats)]
    graphs = root / f"{MODEL}_graphs"
    shutil.copytree(root / MODEL, graphs)
    text = (root / MODEL / "config.pbtxt").read_text().replace(f'name: "{MODEL}"', f'name: "{MODEL}_graphs"')
    listed = ",".join(str(size) for size in sorted(set(sizes)))
    write_config(
        graphs, text + f'parameters {{ key: "cuda_graph_batch_sizes" value: {{ string_value: "{listed}" }} }}\n'
    )
    return [*names, graphs.name]


def summarize(latencies_s: list[float], rows: int, elapsed_s: float) -> dict:
    lat = np.sort(np.array(latencies_s)) * 1e3
    return {
        "batch": rows,
        "calls": len(lat),
        "samples_per_s": rows * len(lat) / elapsed_s,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def backend_sweep(repository: Path, name: str, sizes: list[int], seconds: float):
    """(summary, ONNX Runtime providers or None) per batch size, for ``execute`` alone, one call at a time."""
    from tailmark.server.repository import Repository

    repo = Repository(repository)
    repo.load_all()
    try:
        entry = repo.models[name]
        if not entry.ready:
            raise RuntimeError(f"{name}: {entry.reason}")
        backend = repo.get(name).backend
        rng = np.random.default_rng(0)
        for rows in sizes:
            batch = {"input": rng.random((rows, 3, 32, 32), dtype=np.float32)}
            for _ in range(3):
                backend.execute(batch)
            latencies, start = [], time.perf_counter()
            while time.perf_counter() - start < seconds:
                begin = time.perf_counter()
                backend.execute(batch)
                latencies.append(time.perf_counter() - begin)
            yield summarize(latencies, rows, time.perf_counter() - start), getattr(backend, "providers", None)
    finally:
        repo.close()


async def served(target: str, name: str, rows: int, seconds: float, concurrency: int) -> dict:
    from tailmark.client.h2_transport import H2Transport
    from tailmark.protos import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name="input", datatype="FP32", shape=[rows, 3, 32, 32])
    request.raw_input_contents.append(np.random.default_rng(1).random((rows, 3, 32, 32), np.float32).tobytes())
    payload = request.SerializeToString()
    transport = await H2Transport.connect(target, connections=min(concurrency, 4))
    try:
        for _ in range(5):
            await transport.infer(payload)
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def worker():
            while time.perf_counter() < stop:
                begin = time.perf_counter()
                await transport.infer(payload)
                latencies.append(time.perf_counter() - begin)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return summarize(latencies, rows, time.perf_counter() - start)
    finally:
        await transport.aclose()


class Results:
    """Every measurement so far, rewritten atomically to server_gpu.json after each one."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path
        self.doc = {"meta": meta, "measurements": []}

    def add(self, variant: str, mode: str, summary: dict, **extra) -> None:
        self.doc["measurements"].append({"variant": variant, "mode": mode, **summary, **extra})
        print(
            f"  {variant:<15} {mode:<8} batch {summary['batch']:>4}: {summary['samples_per_s']:>10.0f} samples/s"
            f"  p50 {summary['p50_ms']:7.2f} ms  p99 {summary['p99_ms']:7.2f} ms",
            flush=True,
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1))
        tmp.replace(self.path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("server_gpu: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
        return 0
    from support.serve import ServerProcess

    args.output.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.batch_sizes))
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    results = Results(args.output / "server_gpu.json", {"device": device_name, "torch": torch.__version__,
                                                          "batch_sizes": sizes, "seconds": args.seconds})  # fmt: skip
    started = time.monotonic()

    def in_budget() -> bool:
        return not args.budget_s or time.monotonic() - started < args.budget_s

    with tempfile.TemporaryDirectory(prefix="tailmark-gpu-") as tmp:
        repository = Path(tmp) / args.device
        variants = build_repository(repository, args.device, sizes)
        print(f"device {device_name}; variants {', '.join(variants)}; batch sizes {sizes}", flush=True)
        for variant in variants:
            if not in_budget():
                break
            try:
                for summary, providers in backend_sweep(repository, variant, sizes, args.seconds):
                    results.add(variant, "backend", summary, providers=providers)
                    if not in_budget():
                        break
            except RuntimeError as exc:
                print(f"  {variant}: not measured: {exc}", flush=True)
        with ServerProcess(repository) as server:
            for variant in variants:
                for rows in sizes:
                    if not in_budget():
                        break
                    try:
                        summary = asyncio.run(served(server.target, variant, rows, args.seconds, args.concurrency))
                    except Exception as exc:  # an unavailable variant: say so, go on with the others
                        print(f"  {variant}: not served: {exc}", flush=True)
                        break
                    results.add(variant, "served", summary)
        if args.cpu_baseline and args.device == "cuda" and in_budget():
            cpu_repository = Path(tmp) / "cpu"
            build_repository(cpu_repository, "cpu", sizes)
            for summary, _ in backend_sweep(cpu_repository, MODEL, sizes, args.seconds):
                results.add(f"{MODEL}@cpu", "backend", summary)
    report_ratios(results.doc["measurements"])
    print(f"results: {results.path}")
    return 0


def report_ratios(measurements: list[dict]) -> None:
    """GPU eager and CUDA-graph throughput over the CPU baseline, per batch size (backend only)."""
    by = {(m["variant"], m["mode"], m["batch"]): m["samples_per_s"] for m in measurements}
    baseline = {batch: rate for (variant, mode, batch), rate in by.items() if variant == f"{MODEL}@cpu"}
    for variant in (MODEL, f"{MODEL}_graphs"):
        ratios = [f"{batch}: {by[(variant, 'backend', batch)] / rate:.1f}x"
                  for batch, rate in sorted(baseline.items()) if (variant, "backend", batch) in by]  # fmt: skip
        if ratios:
            print(f"{variant} on the GPU over the CPU baseline (samples/s): {', '.join(ratios)}")


if __name__ == "__main__":
    sys.exit(main())
