"""The generated protobuf modules are reproducible and up to date with protos/*.proto."""

from __future__ import annotations

from pathlib import Path

from protos import build


def test_generated_code_matches_the_proto_sources(tmp_path: Path) -> None:
    build.generate(tmp_path)
    generated = sorted(p.name for p in (tmp_path / "protos").iterdir())
    assert generated, "protoc generated nothing"
    for name in generated:
        committed = build.ROOT / "protos" / name
        assert committed.exists(), f"protos/{name} is missing: run `make protos`"
        assert committed.read_text() == (tmp_path / "protos" / name).read_text(), (
            f"protos/{name} is out of date with its .proto: run `make protos`"
        )
