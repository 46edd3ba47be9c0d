"""The Apple pass adapter: pass.json valid against Apple's format for every kind, the
library's defects repaired, manifest hashes, localisation, images, and a signature openssl
accepts (and rejects once the manifest changes)."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from wallet import models

from services.wallet.applepass import (
    PassContent,
    PassField,
    PassSigner,
    build_pkpass,
    pass_files,
    pass_json,
)
from services.wallet.devcerts import SigningFiles
from services.wallet.images import image_files
from services.wallet.templates import DEFAULT_TEMPLATE, PassKind, Place
from tests.support.wallet import manifest_problems, pass_problems, unzip, verify_signature
from tests.unit.wallet.conftest import PASS_TYPE_ID, TEAM_ID

AT = datetime(2026, 12, 1, 18, 30, tzinfo=UTC)


def content(kind: PassKind = PassKind.STORE_CARD, **changes: object) -> PassContent:
    base = PassContent(
        serial_number="S-1",
        kind=kind,
        description="Lodestar loyalty card",
        organization_name="Lodestar",
        logo_text="Lodestar",
        colours=DEFAULT_TEMPLATE.colours("Gold"),
        barcode_message="S-1",
        header=[PassField("points", 120, "points", "You now have %@ points")],
        primary=[PassField("cashback", 12.5, "cashback", currency="EUR")],
        secondary=[PassField("tier", "Gold", "tier", "Congratulations, you are now %@")],
        auxiliary=[PassField("since", AT.isoformat(), "date", is_date=True)],
        back=[PassField("terms", "terms_text", "terms")],
        web_service_url="https://wallet.example.com/passkit",
        authentication_token="t" * 43,
        places=DEFAULT_TEMPLATE.places,
        strings=DEFAULT_TEMPLATE.strings,
        images=image_files((10, 20, 30)),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(PassKind))
def test_every_kind_is_a_valid_apple_pass(kind: PassKind) -> None:
    doc = pass_json(content(kind), PASS_TYPE_ID, TEAM_ID)
    assert pass_problems(doc) == []
    assert kind.value in doc
    assert doc["passTypeIdentifier"] == PASS_TYPE_ID
    assert doc["teamIdentifier"] == TEAM_ID


def test_expiration_voided_sharing_and_relevance_are_written() -> None:
    places = tuple(Place(40 + i / 100, -3.7, f"store {i}") for i in range(10))
    doc = pass_json(
        content(
            expiration=AT + timedelta(days=30),
            voided=True,
            sharing_prohibited=True,
            places=places,
            relevant_dates=(AT, AT + timedelta(days=1)),
        ),
        PASS_TYPE_ID,
        TEAM_ID,
    )
    assert pass_problems(doc) == []
    assert doc["expirationDate"] == "2026-12-31T18:30:00+00:00"
    assert doc["voided"] is True
    assert doc["sharingProhibited"] is True
    assert len(doc["locations"]) == 10
    assert doc["relevantDate"] == "2026-12-01T18:30:00+00:00"
    assert doc["relevantDates"] == [
        {"date": "2026-12-01T18:30:00+00:00"},
        {"date": "2026-12-02T18:30:00+00:00"},
    ]


def test_more_than_ten_locations_is_refused() -> None:
    places = tuple(Place(40, -3) for _ in range(11))
    with pytest.raises(ValueError, match="at most 10 locations"):
        pass_json(content(places=places), PASS_TYPE_ID, TEAM_ID)


def test_the_library_defects_are_repaired() -> None:
    # What wallet-py3k writes on its own: the reason the adapter exists.
    raw = models.Pass(models.StoreCard(), passTypeIdentifier=PASS_TYPE_ID)
    raw.passInformation.addPrimaryField("points", 1, "Points")
    raw.expirationDate = AT.isoformat()
    raw.barcode = models.Barcode("S-1", models.BarcodeFormat.QR)
    raw.locations = [models.Location(40, -3)]
    library = json.loads(raw._createPassJson())
    assert library["storeCard"]["primaryFields"][0]["changeMessage"] == ""
    assert "expirationDate" not in library
    assert "barcodes" not in library
    assert library["locations"][0]["distance"] is None
    assert library["locations"][0]["altitude"] == 0.0

    doc = pass_json(content(expiration=AT), PASS_TYPE_ID, TEAM_ID)
    fields = [f for area in doc["storeCard"].values() for f in area]
    assert all("changeMessage" not in f or "%@" in f["changeMessage"] for f in fields)
    terms = next(f for f in fields if f["key"] == "terms")
    assert "changeMessage" not in terms
    assert doc["expirationDate"] == AT.isoformat()
    assert doc["barcodes"] == [doc["barcode"]]
    assert doc["barcode"] == {
        "format": "PKBarcodeFormatQR",
        "message": "S-1",
        "messageEncoding": "iso-8859-1",
    }
    assert doc["locations"] == [
        {"latitude": 40.4168, "longitude": -3.7038, "relevantText": "Our flagship store is nearby"}
    ]
    with_altitude = pass_json(content(places=(Place(1, 2, altitude=650),)), PASS_TYPE_ID, TEAM_ID)
    assert with_altitude["locations"] == [{"latitude": 1.0, "longitude": 2.0, "altitude": 650.0}]


def test_a_change_message_without_the_placeholder_is_refused() -> None:
    broken = content(secondary=[PassField("tier", "Gold", "tier", "You are Gold now")])
    with pytest.raises(ValueError, match="%@"):
        pass_json(broken, PASS_TYPE_ID, TEAM_ID)


def test_field_kinds_keep_their_styles() -> None:
    doc = pass_json(content(), PASS_TYPE_ID, TEAM_ID)["storeCard"]
    assert doc["primaryFields"][0]["currencyCode"] == "EUR"
    assert doc["headerFields"][0]["numberStyle"] == "PKNumberStyleDecimal"
    assert doc["auxiliaryFields"][0]["dateStyle"] == "PKDateStyleShort"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_images_at_three_scales_and_strings_in_two_languages() -> None:
    files = pass_files(content(), PASS_TYPE_ID, TEAM_ID)
    assert _png_size(files["icon.png"]) == (29, 29)
    assert _png_size(files["icon@2x.png"]) == (58, 58)
    assert _png_size(files["icon@3x.png"]) == (87, 87)
    assert _png_size(files["logo@3x.png"]) == (480, 150)
    english = files["en.lproj/pass.strings"].decode()
    spanish = files["es.lproj/pass.strings"].decode()
    assert '"tier" = "Tier";' in english
    assert '"tier" = "Nivel";' in spanish
    labels = {
        f.get("label") for a in json.loads(files["pass.json"])["storeCard"].values() for f in a
    }
    assert labels <= set(DEFAULT_TEMPLATE.strings["en"]) | {None}


def test_strings_are_escaped() -> None:
    files = pass_files(content(strings={"en": {"quote": 'say "hi"\\now\n'}}), PASS_TYPE_ID, TEAM_ID)
    assert files["en.lproj/pass.strings"] == b'"quote" = "say \\"hi\\"\\\\now\\n";\n'


def test_the_manifest_hashes_every_file(signer: PassSigner) -> None:
    files = unzip(build_pkpass(content(), signer))
    assert manifest_problems(files) == []
    assert {"pass.json", "manifest.json", "signature", "en.lproj/pass.strings"} <= set(files)
    assert pass_problems(json.loads(files["pass.json"])) == []


def test_the_signature_verifies_and_fails_on_a_changed_manifest(
    signer: PassSigner, signing_files: SigningFiles, tmp_path: Path
) -> None:
    files = unzip(build_pkpass(content(), signer))
    verified = verify_signature(files, signing_files.intermediate, tmp_path / "good")
    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr

    listed = json.loads(files["manifest.json"])
    listed["pass.json"] = "0" * 40
    tampered = {**files, "manifest.json": json.dumps(listed).encode()}
    refused = verify_signature(tampered, signing_files.intermediate, tmp_path / "bad")
    assert refused.returncode != 0
    assert "digest failure" in refused.stderr.lower() or "failure" in refused.stderr.lower()


def test_the_signature_names_the_signer_and_the_intermediate(
    signer: PassSigner, signing_files: SigningFiles, tmp_path: Path
) -> None:
    import subprocess

    (tmp_path / "signature").write_bytes(unzip(build_pkpass(content(), signer))["signature"])
    printed = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(tmp_path / "signature"), "-print_certs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Pass Type ID: {PASS_TYPE_ID}" in printed
    assert "stand-in for Apple WWDR G4" in printed
    cms = subprocess.run(
        [
            "openssl",
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "signature"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "sha256" in cms
    assert "eContent: <ABSENT>" in cms  # detached
