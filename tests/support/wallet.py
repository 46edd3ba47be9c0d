"""Checks every wallet test applies to a pass: pass.json against the JSON Schema of Apple's
pass format, the manifest against the files, and the signature with ``openssl smime``."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA = Path(__file__).with_name("wallet_pass_schema.json")


@cache
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def pass_problems(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` breaks Apple's pass format (empty when it is valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator().iter_errors(doc)
    ]


def unzip(pkpass: bytes) -> dict[str, bytes]:
    """The files of a ``.pkpass``."""
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def manifest_problems(files: dict[str, bytes]) -> list[str]:
    """Files missing from the manifest or hashed wrongly, and manifest entries without a file."""
    listed = json.loads(files["manifest.json"])
    signed = {n: d for n, d in files.items() if n not in ("manifest.json", "signature")}
    problems = [f"{name} not in the manifest" for name in signed if name not in listed]
    problems += [f"{name} listed but missing" for name in listed if name not in signed]
    problems += [
        f"{name} hash differs"
        for name, data in signed.items()
        if name in listed and listed[name] != hashlib.sha1(data).hexdigest()
    ]
    return problems


def verify_signature(
    files: dict[str, bytes], ca: Path, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """``openssl smime -verify`` of the detached signature over manifest.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "manifest.json").write_bytes(files["manifest.json"])
    (workdir / "signature").write_bytes(files["signature"])
    return subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-inform",
            "DER",
            "-binary",
            "-in",
            str(workdir / "signature"),
            "-content",
            str(workdir / "manifest.json"),
            "-CAfile",
            str(ca),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
