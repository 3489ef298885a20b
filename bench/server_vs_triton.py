"""tailmark's server vs the bare ``tritonserver`` (nvidia-pytriton wheel, python backend, CPU), in one run.

Both serve the same exported models: ``identity`` and the reference ResNet with dynamic batching
(tailmark: ``resnet_onnx`` on its ONNX Runtime backend; Triton: ``resnet``, the python-backend model
running the same model.onnx with ONNX Runtime). A separate load process sends an open-loop Poisson
stream of pre-serialised requests over grpc.aio on uvloop; latency is done - intended. For each
(server, model) the highest rate whose p99 stays <= --p99-ms with no errors is found by doubling then
bisecting, and the tailmark/Triton ratio is printed; so is tailmark's ResNet rate with batching off.

    python bench/server_vs_triton.py [--seconds 3] [--p99-ms 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

LOAD = r"""
import asyncio, json, sys, time
import grpc, numpy as np, uvloop
from tailmark.protos import inference_pb2 as pb

target, model, name = sys.argv[1:4]
shape, rate, seconds = json.loads(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
request = pb.ModelInferRequest(model_name=model)
request.inputs.add(name=name, datatype="FP32", shape=shape)
request.raw_input_contents.append(np.random.default_rng(0).random(shape, dtype=np.float32).tobytes())
payload = request.SerializeToString()

async def main():
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(50):
            await call(payload)
        rng = np.random.default_rng(1)
        latencies, errors, tasks = [], 0, set()
        async def one(intended):
            nonlocal errors
            try:
                await call(payload)
                latencies.append(time.perf_counter_ns() - intended)
            except grpc.aio.AioRpcError:
                errors += 1
        start = time.perf_counter_ns()
        intended = start
        end = start + int(seconds * 1e9)
        while intended < end:
            intended += int(rng.exponential(1e9 / rate))
            delay = (intended - time.perf_counter_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one(intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        lat = np.sort(np.array(latencies)) / 1e6
        print(json.dumps({"p99_ms": float(np.percentile(lat, 99)) if len(lat) else 1e9, "errors": errors,
                          "done": len(lat)}))

uvloop.run(main())
"""


def trial(target: str, model: str, name: str, shape: list[int], rate: float, seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, target, model, name, json.dumps(shape), str(rate), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 60,
    )
    if out.returncode != 0:
        return {"p99_ms": 1e9, "errors": -1, "stderr": out.stderr[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def highest_rate(target: str, model: str, name: str, shape: list[int], args) -> tuple[float, dict]:
    def ok(result: dict) -> bool:
        return result["errors"] == 0 and result["p99_ms"] <= args.p99_ms

    good, bad, rate, best = 0.0, None, args.start_rate, {}
    while bad is None and rate <= args.max_rate:
        result = trial(target, model, name, shape, rate, args.seconds)
        print(f"    {model} @ {rate:7.0f}/s: p99 {result['p99_ms']:8.2f} ms, errors {result['errors']}", flush=True)
        if ok(result):
            good, best, rate = rate, result, rate * 2
        else:
            bad = rate
    for _ in range(args.bisect if bad is not None else 0):
        rate = (good + bad) / 2
        result = trial(target, model, name, shape, rate, args.seconds)
        print(f"    {model} @ {rate:7.0f}/s: p99 {result['p99_ms']:8.2f} ms, errors {result['errors']}", flush=True)
        if ok(result):
            good, best = rate, result
        else:
            bad = rate
    return good, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--p99-ms", type=float, default=10.0)
    parser.add_argument("--start-rate", type=float, default=100.0)
    parser.add_argument("--max-rate", type=float, default=20000.0)
    parser.add_argument("--bisect", type=int, default=3)
    args = parser.parse_args()

    from support.serve import ServerProcess
    from tailmark.deploy.triton.launch import TritonProcess
    from tailmark.deploy.triton.repository import write_triton_repository
    from tailmark.models.export import (
        REFERENCE_MODELS,
        Batching,
        export_reference,
        identity_config,
        model_config,
        write_config,
    )

    image = [1, 3, 32, 32]
    with tempfile.TemporaryDirectory(prefix="tailmark-bench-") as scratch:
        root = Path(scratch)
        batching = Batching(max_batch_size=8, max_queue_delay_us=500)
        export_reference("resnet", root / "tailmark", batching, formats=("onnx",))
        write_config(root / "tailmark" / "identity", identity_config('backend: "identity"'))
        unbatched = root / "tailmark" / "resnet_nobatch"
        write_config(
            unbatched,
            model_config(
                "resnet_nobatch", 'platform: "onnxruntime_onnx"', REFERENCE_MODELS["resnet"], Batching(dynamic=False)
            ),
        )
        (unbatched / "1" / "model.onnx").write_bytes(
            (root / "tailmark" / "resnet_onnx" / "1" / "model.onnx").read_bytes()
        )
        onnx = root / "tailmark" / "resnet_onnx" / "1" / "model.onnx"
        write_triton_repository(root / "triton", "resnet", batching, onnx, backends=("python",))

        results = {}
        with ServerProcess(root / "tailmark") as server:
            print(f"tailmark serve ({server.target})", flush=True)
            results["tailmark identity"] = highest_rate(server.target, "identity", "INPUT0", [16], args)
            results["tailmark resnet"] = highest_rate(server.target, "resnet_onnx", "input", image, args)
            results["tailmark resnet, no batching"] = highest_rate(
                server.target, "resnet_nobatch", "input", image, args
            )
        with TritonProcess(root / "triton", log_path=root / "triton.log") as triton:
            print(f"tritonserver ({triton.target})", flush=True)
            results["triton identity"] = highest_rate(triton.target, "identity", "INPUT0", [16], args)
            results["triton resnet"] = highest_rate(triton.target, "resnet", "input", image, args)

    print(f"\nhighest Poisson rate with p99 <= {args.p99_ms} ms and no errors ({args.seconds:.0f} s trials):")
    for key, (rate, _) in results.items():
        print(f"  {key:32s} {rate:8.0f} req/s")
    for model in ("identity", "resnet"):
        theirs = results[f"triton {model}"][0]
        ratio = results[f"tailmark {model}"][0] / theirs if theirs else float("inf")
        print(f"  tailmark / triton, {model:9s}  {ratio:8.2f}x")
    off = results["tailmark resnet, no batching"][0]
    print(f"  tailmark resnet batching on / off {results['tailmark resnet'][0] / off if off else float('inf'):8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
