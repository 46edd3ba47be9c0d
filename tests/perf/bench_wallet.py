"""Wallet benchmark (``make bench``), part (a): build, sign and zip a loyalty pass, in passes
per second on one core, with Lodestar's adapter (in-process CMS signing) and with
wallet-py3k's own ``create()`` (an ``openssl smime`` subprocess per pass) in the same run on
the same certificates. Target: 500 passes/s or more. Prints JSON lines with the core count.

Part (b), profile change to APNs push latency, arrives with the APNs client.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from wallet import models

from services.wallet.applepass import PassSigner, build_pkpass
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.images import image_files
from services.wallet.passes import authentication_token, pass_content
from services.wallet.templates import DEFAULT_TEMPLATE, PassKind

PASS_TYPE_ID = "pass.com.example.lodestar.bench"
TEAM_ID = "BENCH00001"
TARGET_PER_S = 500
WEB_SERVICE_URL = "https://wallet.example.com"


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count on every line."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def stored_pass(i: int) -> dict[str, Any]:
    """A loyalty pass as the store keeps it."""
    return {
        "_id": f"bench-{i:08d}",
        "kind": PassKind.STORE_CARD.value,
        "template": DEFAULT_TEMPLATE.name,
        "authentication_token": authentication_token(),
        "fields": {"tier": "Gold", "points": 1_000 + i, "cashback_minor": 2_550},
        "created_at": datetime.now(UTC),
    }


def lodestar_build(signer: PassSigner) -> Callable[[int], bytes]:
    def build(i: int) -> bytes:
        return build_pkpass(pass_content(stored_pass(i), WEB_SERVICE_URL), signer)

    return build


def library_build(files: SigningFiles) -> Callable[[int], bytes]:
    """The same card through wallet-py3k alone (its fields, files and create())."""
    colours = DEFAULT_TEMPLATE.colours("Gold")
    images = image_files(colours.background)

    def build(i: int) -> bytes:
        doc = stored_pass(i)
        card = models.StoreCard()
        card.addHeaderField("points", doc["fields"]["points"], "points")
        card.addPrimaryField("cashback", 25.5, "cashback")
        card.addSecondaryField("tier", "Gold", "tier")
        card.addBackField("terms", "terms_text", "terms")
        built = models.Pass(card, passTypeIdentifier=PASS_TYPE_ID, teamIdentifier=TEAM_ID)
        built.organizationName = DEFAULT_TEMPLATE.organization_name
        built.serialNumber = doc["_id"]
        built.description = DEFAULT_TEMPLATE.description
        built.backgroundColor = "rgb({}, {}, {})".format(*colours.background)
        built.barcode = models.Barcode(doc["_id"], models.BarcodeFormat.QR)
        built.webServiceURL = WEB_SERVICE_URL
        built.authenticationToken = doc["authentication_token"]
        for name, data in images.items():
            built.addFile(name, BytesIO(data))
        for language, strings in DEFAULT_TEMPLATE.strings.items():
            text = "".join(f'"{k}" = "{v}";\n' for k, v in strings.items())
            built.addFile(f"{language}.lproj/pass.strings", BytesIO(text.encode()))
        out = built.create(
            str(files.certificate), str(files.key), str(files.intermediate), "", BytesIO()
        )
        return bytes(out.getvalue())

    return build


def measure(build: Callable[[int], bytes], seconds: float) -> tuple[int, float, int]:
    """Passes built, elapsed seconds and the size of the last pass."""
    for i in range(5):  # warm caches (images, key loading) out of the timing
        build(i)
    count, size = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        size = len(build(count))
        count += 1
    return count, time.perf_counter() - started, size


def main() -> None:
    """Run both builders for the same wall time each and print the rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per builder")
    args = parser.parse_args()
    # One core for this process and the openssl subprocesses it starts.
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    with tempfile.TemporaryDirectory() as folder:
        files = ensure_dev_certificates(Path(folder), PASS_TYPE_ID, TEAM_ID)
        signer = PassSigner.from_files(files.certificate, files.key, files.intermediate)
        rates = {}
        for name, build in (
            ("lodestar_adapter_cryptography", lodestar_build(signer)),
            ("wallet_py3k_create_openssl", library_build(files)),
        ):
            count, elapsed, size = measure(build, args.seconds)
            rates[name] = count / elapsed
            emit(
                {
                    "metric": "wallet_pass_build_sign_zip_per_s",
                    "impl": name,
                    "value": round(rates[name], 1),
                    "passes": count,
                    "seconds": round(elapsed, 2),
                    "pkpass_bytes": size,
                    "pinned_cores": 1,
                }
            )
    ours = rates["lodestar_adapter_cryptography"]
    emit(
        {
            "metric": "wallet_pass_build_speedup",
            "value": round(ours / rates["wallet_py3k_create_openssl"], 2),
            "target_per_s": TARGET_PER_S,
            "meets_target": ours >= TARGET_PER_S,
            "note": "lodestar adapter / wallet-py3k create(), same run, same certificates, "
            "one core",
        }
    )


if __name__ == "__main__":
    main()
