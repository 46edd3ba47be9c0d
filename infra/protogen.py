"""Regenerates the Python code for protos/lodestar/v1 (``make protos``).

The generated modules are committed beside the .proto files; tests call ``generate`` into a
temporary directory and compare, so stale generated code fails the build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "lodestar" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    """The .proto sources, in a stable order."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Compile every proto into ``out_root`` (laid out as ``lodestar/v1/...``)."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    bin_dir = str(Path(sys.executable).parent)
    # protoc finds the mypy plugins on PATH; the venv's bin holds them.
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    (out_root / "lodestar" / "v1").mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    return sorted(
        p for p in (out_root / "lodestar" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def main() -> None:
    """Regenerate in place: write to a scratch dir, then replace the committed files."""
    argparse.ArgumentParser(description=__doc__).parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        produced = generate(Path(scratch))
        for old in PROTO_DIR.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
        for new in produced:
            shutil.copyfile(new, PROTO_DIR / new.name)
    print(f"generated {len(produced)} files in {PROTO_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
