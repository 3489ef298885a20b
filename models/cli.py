"""``tailmark export``: turn a reference model into the files servers load, as model repositories.

``--output DIR`` writes a tailmark repository (``identity``, ``<model>`` as TorchScript, ``<model>_onnx``,
and ``<model>_trt`` where TensorRT and CUDA exist); ``--triton-repo DIR`` writes the same models with the
same batching for Triton (see deploy/triton/repository.py), with the synthetic LLM ``synth-llm`` and, for each
``--lm DIR``, a trained lm export as decoupled python-backend models (deploy/triton/generative.py). Either or both.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

# the keys of models/export.py REFERENCE_MODELS, spelled out so that building the CLI never imports
# torch (seconds on every `tailmark` start); tests/test_packaging.py keeps the two equal
MODEL_NAMES = ("digits_cnn", "resnet")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a reference model to TorchScript/ONNX/TensorRT repositories", description=__doc__
    )
    parser.add_argument("--model", default="resnet", choices=MODEL_NAMES, help="reference model")
    parser.add_argument("--output", type=Path, help="tailmark model repository to write into")
    parser.add_argument("--triton-repo", type=Path, help="Triton model repository to write into")
    parser.add_argument(
        "--formats", default="torchscript,onnx,tensorrt", help="for --output: any of torchscript,onnx,tensorrt"
    )
    parser.add_argument("--max-batch-size", type=int, default=8, help="max_batch_size (0: no batching)")
    parser.add_argument(
        "--preferred-batch-size", type=int, action="append", default=[], help="preferred batch size (repeatable)"
    )
    parser.add_argument("--max-queue-delay-us", type=int, default=500, help="dynamic batcher queue delay")
    parser.add_argument("--no-dynamic-batching", action="store_true", help="one execution per request")
    parser.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed")
    parser.add_argument(
        "--lm", type=Path, action="append", default=[], metavar="DIR",
        help="with --triton-repo: also write this lm export (tailmark train lm --export-to REPO: REPO/<benchmark>) "
        "as a streaming Triton model (repeatable)",
    )  # fmt: skip
    parser.set_defaults(handler=export_command)


def export_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError

    if args.output is None and args.triton_repo is None:
        raise UsageError("nothing to do: give --output DIR, --triton-repo DIR or both")
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = sorted(set(formats) - {"torchscript", "onnx", "tensorrt"})
    if unknown:
        raise UsageError(f"--formats {','.join(unknown)}: unknown; choose from torchscript,onnx,tensorrt")
    if args.max_batch_size < 0 or args.instances < 1 or args.max_queue_delay_us < 0:
        raise UsageError("--max-batch-size and --max-queue-delay-us must be >= 0, --instances >= 1")
    bad = [size for size in args.preferred_batch_size if not 1 <= size <= args.max_batch_size]
    if bad:
        raise UsageError(f"--preferred-batch-size {bad[0]} is outside 1..{args.max_batch_size} (--max-batch-size)")
    if args.lm and args.triton_repo is None:
        raise UsageError("--lm writes into a Triton repository: give --triton-repo DIR")
    if args.lm:
        from tailmark.deploy.triton.generative import GenerativeExportError, write_tiny_lm

        for lm in args.lm:  # first: a wrong folder is one line before anything slow runs
            try:
                print(f"tailmark export: wrote {write_tiny_lm(args.triton_repo, lm)} (Triton)")
            except GenerativeExportError as exc:
                raise UsageError(f"--lm: {exc}") from None

    from tailmark.models.export import Batching, export_reference, identity_config, write_config

    batching = Batching(
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=tuple(sorted(set(args.preferred_batch_size))),
        max_queue_delay_us=args.max_queue_delay_us,
        dynamic=not args.no_dynamic_batching,
        instances=args.instances,
    )
    with tempfile.TemporaryDirectory(prefix="tailmark-export-") as scratch:
        output = args.output or Path(scratch)
        if args.triton_repo is not None:
            formats = tuple(sorted({*formats, "onnx"}))  # Triton's models are built from model.onnx
        written = export_reference(args.model, output, batching, formats=formats, seed=args.seed)
        if args.output is not None:
            write_config(output / "identity", identity_config('backend: "identity"'))
            written.append(output / "identity")
        for path in written if args.output is not None else []:
            print(f"tailmark export: wrote {path}")
        if args.triton_repo is not None:
            from tailmark.deploy.triton.repository import write_triton_repository

            onnx_path = output / f"{args.model}_onnx" / "1" / "model.onnx"
            plan_path = output / f"{args.model}_trt" / "1" / "model.plan"
            for path in write_triton_repository(args.triton_repo, args.model, batching, onnx_path, plan_path=plan_path):
                print(f"tailmark export: wrote {path} (Triton)")
    if "tensorrt" in formats:
        from tailmark.models.export import tensorrt_available

        if not tensorrt_available():
            print("tailmark export: no TensorRT plan: TensorRT or a CUDA device is missing here")
    return 0
