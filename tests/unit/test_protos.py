"""The committed generated code must match what ``make protos`` produces now."""

from __future__ import annotations

from pathlib import Path

from infra.protogen import GENERATED_SUFFIXES, PROTO_DIR, generate


def test_generated_code_is_current(tmp_path: Path) -> None:
    produced = {p.name: p.read_bytes() for p in generate(tmp_path)}
    committed = {
        p.name: p.read_bytes() for p in PROTO_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    }
    assert sorted(produced) == sorted(committed), "run `make protos` and commit the result"
    stale = [name for name, data in produced.items() if committed[name] != data]
    assert not stale, f"stale generated code, run `make protos`: {stale}"


def test_every_proto_is_importable_as_lodestar_v1() -> None:
    import importlib

    for proto in sorted(PROTO_DIR.glob("*.proto")):
        module = importlib.import_module(f"lodestar.v1.{proto.stem}_pb2")
        assert module.DESCRIPTOR.package == "lodestar.v1"
