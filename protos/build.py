"""Regenerate the Python modules for ``protos/*.proto`` (``python -m protos.build``).

Generation runs from the repository root with ``-I .`` so generated gRPC stubs import
their messages as ``protos.<name>_pb2`` and stay importable from an installed package.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sources() -> list[Path]:
    return sorted((ROOT / "protos").glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write the generated modules for every ``.proto`` into ``out_dir/protos``."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    target = out_dir
    (target / "protos").mkdir(parents=True, exist_ok=True)
    for source in sources():
        # gRPC stubs only for files that define services: an empty *_pb2_grpc module
        # would only add a grpcio version check to import.
        has_service = "\nservice " in source.read_text()
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{include}",
            f"--python_out={target}",
            f"--pyi_out={target}",
            *([f"--grpc_python_out={target}"] if has_service else []),
            str(source.relative_to(ROOT)),
        ]
        code = protoc.main(args)
        if code != 0:
            raise SystemExit(f"protoc failed on {source.name} with exit code {code}")


def main() -> None:
    generate(ROOT)
    print("generated:", ", ".join(p.stem for p in sources()), file=sys.stderr)


if __name__ == "__main__":
    main()
