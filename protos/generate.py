"""Regenerate the Python modules from the .proto files in this folder.

The protos import each other as ``tailmark/protos/<file>.proto`` so that the generated modules import
``tailmark.protos.<module>`` and register distinct file names in protobuf's default pool (tritonclient
registers ``grpc_service.proto`` and ``model_config.proto`` there). Needs ``grpcio-tools`` (test extra).

    python protos/generate.py            # rewrite the *_pb2.py files in place
    python protos/generate.py --check    # exit 1 if they are out of date
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("model_config.proto", "inference.proto")


def generate_into(out_dir: Path) -> dict[str, str]:
    """Compile every proto into ``out_dir`` and return {module file name: source}."""
    from grpc_tools import protoc

    stage = out_dir / "stage"
    (stage / "tailmark" / "protos").mkdir(parents=True)
    for name in PROTOS:
        shutil.copy(HERE / name, stage / "tailmark" / "protos" / name)
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = ["protoc", f"-I{stage}", f"-I{well_known}", f"--python_out={out_dir}"]
    args += [f"tailmark/protos/{name}" for name in PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    generated = out_dir / "tailmark" / "protos"
    return {p.name: p.read_text() for p in sorted(generated.glob("*_pb2.py"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the files are current")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        modules = generate_into(Path(tmp))
    stale = [name for name, text in modules.items() if not (HERE / name).exists() or (HERE / name).read_text() != text]
    if args.check:
        for name in stale:
            print(f"protos/{name} is out of date; run: python protos/generate.py", file=sys.stderr)
        return 1 if stale else 0
    for name, text in modules.items():
        (HERE / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
