"""Apple Wallet passes (``.pkpass``) built with wallet-py3k and corrected where it is wrong.

wallet-py3k models the pass, but as released it: gives every field an empty ``changeMessage``
(Apple wants the ``%@`` placeholder, or no key at all); drops ``expirationDate`` (the attribute
is misspelt ``exprirationDate``); writes only the deprecated single ``barcode``; gives every
location ``distance: null`` and an altitude of 0; and signs by running ``openssl`` with the
key password on its command line (slow, and the password shows in ``ps``). This module is the
one place the library is used: it takes the library's pass dictionary, repairs those keys,
adds what the library lacks (``sharingProhibited``, ``relevantDates``), then writes the
manifest of SHA-1 hashes, signs it in-process with ``cryptography`` (detached CMS, DER,
SHA-256, the signing certificate and Apple's WWDR intermediate included) and zips the pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from wallet import models

from services.wallet.templates import MAX_LOCATIONS, PassKind, Place, TierColours

# A JSON object in another party's schema (Apple's pass.json, Google Wallet's REST bodies):
# its shape is theirs, so its values stay unchecked here.
JsonObject = dict[str, Any]

PKPASS_MEDIA_TYPE = "application/vnd.apple.pkpass"
# Apple's pass type certificates carry the pass type id as the subject's user id.
_USER_ID = x509.ObjectIdentifier("0.9.2342.19200300.100.1.1")
_STYLES: Mapping[PassKind, type[models.PassInformation]] = {
    PassKind.STORE_CARD: models.StoreCard,
    PassKind.COUPON: models.Coupon,
    PassKind.EVENT_TICKET: models.EventTicket,
    PassKind.GENERIC: models.Generic,
}
_FIELD_AREAS = ("headerFields", "primaryFields", "secondaryFields", "auxiliaryFields", "backFields")


@dataclass(frozen=True)
class PassField:
    """One field of a pass. ``label`` is a key of the pass's strings (translated on the
    phone); ``change_message`` is the lock-screen text when the value changes and must
    contain ``%@`` (the new value)."""

    key: str
    value: str | int | float
    label: str = ""
    change_message: str = ""
    currency: str = ""
    is_date: bool = False


@dataclass(frozen=True)
class PassContent:
    """Everything a pass shows, independent of the signing identity."""

    serial_number: str
    kind: PassKind
    description: str
    organization_name: str
    logo_text: str
    colours: TierColours
    barcode_message: str
    header: Sequence[PassField] = ()
    primary: Sequence[PassField] = ()
    secondary: Sequence[PassField] = ()
    auxiliary: Sequence[PassField] = ()
    back: Sequence[PassField] = ()
    web_service_url: str = ""
    authentication_token: str = ""
    places: Sequence[Place] = ()
    relevant_dates: Sequence[datetime] = ()
    expiration: datetime | None = None
    voided: bool = False
    sharing_prohibited: bool = False
    # language -> label key -> text, written as <language>.lproj/pass.strings
    strings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # file name (icon.png, logo@2x.png, ...) -> PNG bytes
    images: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class PassSigner:
    """The pass type certificate with its key and the intermediate that issued it."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate

    @classmethod
    def from_files(
        cls, certificate: Path, key: Path, intermediate: Path, password: str = ""
    ) -> PassSigner:
        """Load PEM files (the intermediate may be DER, as Apple ships it); a bad file raises
        ``ValueError`` naming it."""
        loaded_key = _load_key(key, password)
        signer = cls(_load_certificate(certificate), loaded_key, _load_certificate(intermediate))
        if _spki(signer.certificate.public_key()) != _spki(loaded_key.public_key()):
            raise ValueError(f"{key} is not the key of the certificate {certificate}")
        return signer

    @property
    def pass_type_id(self) -> str:
        """The pass type id the certificate is for (its subject's UID), or ``""``."""
        values = self.certificate.subject.get_attributes_for_oid(_USER_ID)
        return str(values[0].value) if values else ""

    @property
    def team_id(self) -> str:
        """The team id of the certificate (its subject's OU), or ``""``."""
        values = self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        return str(values[0].value) if values else ""

    def sign(self, manifest: bytes) -> bytes:
        """A detached CMS signature of ``manifest``: DER, SHA-256, both certificates."""
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(manifest)
            .add_signer(self.certificate, self.key, hashes.SHA256())
            .add_certificate(self.intermediate)
            .sign(
                serialization.Encoding.DER,
                [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
            )
        )


def _spki(key: PublicKeyTypes) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"{path} is not an X.509 certificate") from exc


def _load_key(path: Path, password: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(
            path.read_bytes(), password.encode() if password else None
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a PEM private key this password opens") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        # ValueError like every other unusable file, so callers handle one kind.
        raise ValueError(f"{path} must hold an RSA or EC key")  # noqa: TRY004
    return key


def _rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*colour)


def _stamp(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _library_field(item: PassField) -> models.Field:
    value = _stamp(item.value) if isinstance(item.value, datetime) else item.value
    if item.currency:
        made: models.Field = models.CurrencyField(item.key, value, item.label, item.currency)
    elif item.is_date:
        made = models.DateField(item.key, value, item.label)
    elif isinstance(value, int | float):
        made = models.NumberField(item.key, value, item.label)
    else:
        made = models.Field(item.key, value, item.label)
    made.changeMessage = item.change_message
    return made


def _repair_field(raw: JsonObject) -> JsonObject:
    fixed = {k: v for k, v in raw.items() if v not in ("", None)}
    message = fixed.get("changeMessage")
    if message is not None and "%@" not in message:
        raise ValueError(f"changeMessage of field {fixed['key']!r} must contain %@")
    return fixed


def _location(place: Place) -> JsonObject:
    raw = models.Location(place.latitude, place.longitude).json_dict()
    fixed = {"latitude": raw["latitude"], "longitude": raw["longitude"]}
    if place.altitude is not None:
        fixed["altitude"] = float(place.altitude)
    if place.relevant_text:
        fixed["relevantText"] = place.relevant_text
    return fixed


def pass_json(content: PassContent, pass_type_id: str, team_id: str) -> JsonObject:
    """The pass.json dictionary: the library's output with its defects repaired."""
    if len(content.places) > MAX_LOCATIONS:
        raise ValueError(f"a pass has at most {MAX_LOCATIONS} locations")
    info = _STYLES[content.kind]()
    for area, items in zip(
        _FIELD_AREAS,
        (content.header, content.primary, content.secondary, content.auxiliary, content.back),
        strict=True,
    ):
        getattr(info, area).extend(_library_field(item) for item in items)
    built = models.Pass(
        info,
        passTypeIdentifier=pass_type_id,
        organizationName=content.organization_name,
        teamIdentifier=team_id,
    )
    built.serialNumber = content.serial_number
    built.description = content.description
    built.logoText = content.logo_text
    built.backgroundColor = _rgb(content.colours.background)
    built.foregroundColor = _rgb(content.colours.foreground)
    built.labelColor = _rgb(content.colours.label)
    built.barcode = models.Barcode(content.barcode_message, models.BarcodeFormat.QR)
    if content.web_service_url:
        built.webServiceURL = content.web_service_url
        built.authenticationToken = content.authentication_token
    # Plain JSON types, exactly as the library would serialise them.
    doc: JsonObject = json.loads(json.dumps(built, default=models.PassHandler))
    style = doc[content.kind.value]
    for area in _FIELD_AREAS:
        if area in style:
            style[area] = [_repair_field(raw) for raw in style[area]]
    doc["barcode"] = {k: v for k, v in doc["barcode"].items() if v != ""}
    doc["barcodes"] = [doc["barcode"]]
    if content.places:
        doc["locations"] = [_location(place) for place in content.places]
    if content.relevant_dates:
        doc["relevantDate"] = _stamp(content.relevant_dates[0])
        doc["relevantDates"] = [{"date": _stamp(at)} for at in content.relevant_dates]
    if content.expiration is not None:
        doc["expirationDate"] = _stamp(content.expiration)
    if content.voided:
        doc["voided"] = True
    if content.sharing_prohibited:
        doc["sharingProhibited"] = True
    return doc


def _strings_file(strings: Mapping[str, str]) -> bytes:
    def quoted(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'

    return "".join(f"{quoted(k)} = {quoted(v)};\n" for k, v in sorted(strings.items())).encode()


def pass_files(content: PassContent, pass_type_id: str, team_id: str) -> dict[str, bytes]:
    """Every file of the pass except the manifest and the signature."""
    files = {
        "pass.json": json.dumps(
            pass_json(content, pass_type_id, team_id), ensure_ascii=False, sort_keys=True
        ).encode(),
        **content.images,
    }
    for language, strings in content.strings.items():
        files[f"{language}.lproj/pass.strings"] = _strings_file(strings)
    return files


def manifest(files: Mapping[str, bytes]) -> bytes:
    """manifest.json: the SHA-1 hex digest of every file, by name."""
    return json.dumps(
        {name: hashlib.sha1(data).hexdigest() for name, data in sorted(files.items())},  # noqa: S324
        sort_keys=True,
    ).encode()


def build_pkpass(content: PassContent, signer: PassSigner) -> bytes:
    """The signed, zipped ``.pkpass``."""
    files = pass_files(content, signer.pass_type_id, signer.team_id)
    listing = manifest(files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("manifest.json", listing)
        archive.writestr("signature", signer.sign(listing))
    return buffer.getvalue()
