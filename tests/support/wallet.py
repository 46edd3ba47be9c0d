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

import httpx
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


class Phone:
    """A simulated iPhone on the PassKit web service: it registers for passes with its push
    token, asks which passes changed since its last tag, downloads them, checks the manifest,
    the signature (``openssl smime -verify`` against ``ca``) and the pass.json schema."""

    def __init__(
        self, http: httpx.AsyncClient, device_id: str, push_token: str, ca: Path, workdir: Path
    ) -> None:
        self.http = http
        self.device_id = device_id
        self.push_token = push_token
        self.ca = ca
        self.workdir = workdir
        self.tags: dict[str, str] = {}
        self._fetches = 0

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"Authorization": f"ApplePass {token}"}

    async def add(self, pass_type_id: str, serial: str, token: str) -> int:
        """Register for the pass's updates; returns the status (201 new, 200 known)."""
        response = await self.http.post(
            f"/v1/devices/{self.device_id}/registrations/{pass_type_id}/{serial}",
            json={"pushToken": self.push_token},
            headers=self._auth(token),
        )
        return response.status_code

    async def changed_serials(self, pass_type_id: str) -> list[str]:
        """The serials changed since the last call (all at first), as a phone asks after a
        push; remembers the new tag."""
        params = (
            {"passesUpdatedSince": self.tags[pass_type_id]} if pass_type_id in self.tags else {}
        )
        response = await self.http.get(
            f"/v1/devices/{self.device_id}/registrations/{pass_type_id}", params=params
        )
        if response.status_code == 204:
            return []
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["lastUpdated"], str)
        self.tags[pass_type_id] = body["lastUpdated"]
        return list(body["serialNumbers"])

    async def fetch(self, pass_type_id: str, serial: str, token: str) -> dict[str, Any]:
        """Download the pass, verify it, and return its pass.json."""
        response = await self.http.get(
            f"/v1/passes/{pass_type_id}/{serial}", headers=self._auth(token)
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/vnd.apple.pkpass"
        files = unzip(response.content)
        assert manifest_problems(files) == []
        self._fetches += 1
        verified = verify_signature(files, self.ca, self.workdir / f"fetch-{self._fetches}")
        assert verified.returncode == 0, verified.stderr
        doc: dict[str, Any] = json.loads(files["pass.json"])
        assert pass_problems(doc) == []
        return doc


def pass_field(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A field of a pass.json by key, whatever its style and area."""
    for style in ("storeCard", "coupon", "eventTicket", "generic", "boardingPass"):
        for area in (
            "headerFields",
            "primaryFields",
            "secondaryFields",
            "auxiliaryFields",
            "backFields",
        ):
            for item in doc.get(style, {}).get(area, []):
                if item["key"] == key:
                    return dict(item)
    return None


def lock_screen_text(doc: dict[str, Any], key: str) -> str:
    """What the lock screen says when ``key`` changes to its current value ("" if silent)."""
    item = pass_field(doc, key)
    if item is None or "changeMessage" not in item:
        return ""
    return str(item["changeMessage"]).replace("%@", str(item["value"]))
