"""Field-level encryption for PII at rest: AES-256-GCM values and HMAC blind indexes.

A PII field (e-mail, phone, later names and addresses) is stored twice: as an
:class:`EncryptedValue` that only a holder of the key ring can read, and as a blind index
(:meth:`FieldCipher.blind_index`) that lets a store find equal values without ever holding the
clear value. Each value is bound to a *context*, the kind of field it belongs to (``"email"``,
``"phone"``), so a ciphertext copied into another field fails to decrypt and the same clear
value gets an unrelated index in each context.

Keys come from configuration as base64 strings (see :func:`cipher_from_settings`); this module
does no I/O of its own. Error messages may name a key id or a context, never key material or a
clear value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

_GENERATE_HINT = (
    'generate one with: python -c "from services.platform.crypto import generate_key; '
    'print(generate_key())"'
)
_DOCUMENT_FIELDS = ("kid", "n", "ct")


class UnknownKeyError(ValueError):
    """A value was encrypted under a key id that the key ring no longer (or never) held."""


class DecryptionError(ValueError):
    """A value failed authentication: it was tampered with or read under the wrong context."""


@dataclass(frozen=True, slots=True)
class EncryptedValue:
    """One encrypted field: the id of the key used, the GCM nonce, and ciphertext plus tag."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not KEY_ID_PATTERN.fullmatch(self.key_id):
            raise ValueError(f"encrypted value key id must match {KEY_ID_PATTERN.pattern}")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"encrypted value nonce must be {NONCE_SIZE} bytes")
        if not isinstance(self.ciphertext, bytes) or len(self.ciphertext) < TAG_SIZE:
            raise ValueError(f"encrypted value ciphertext must be at least {TAG_SIZE} bytes")

    def to_document(self) -> dict[str, Any]:
        """The MongoDB sub-document: raw bytes, which the driver stores as BSON binary."""
        return {"kid": self.key_id, "n": self.nonce, "ct": self.ciphertext}

    @classmethod
    def from_document(cls, doc: object) -> EncryptedValue:
        """Read a sub-document written by :meth:`to_document`.

        Raises ``ValueError`` naming the missing, unexpected or mistyped field; the message
        never repeats the document's content, which may be clear PII stored by mistake.
        """
        # ValueError, not TypeError: a malformed stored document is bad data, not a code bug.
        if not isinstance(doc, Mapping):
            raise ValueError(  # noqa: TRY004
                f"encrypted value document must be a mapping, got {type(doc).__name__}"
            )
        missing = [name for name in _DOCUMENT_FIELDS if name not in doc]
        if missing:
            raise ValueError(f"encrypted value document is missing field(s) {missing}")
        # A field we do not know may come from a newer format this code cannot read safely.
        unexpected = sorted(str(name) for name in doc if name not in _DOCUMENT_FIELDS)
        if unexpected:
            raise ValueError(f"encrypted value document has unexpected field(s) {unexpected}")
        key_id = doc["kid"]
        if not isinstance(key_id, str):
            raise ValueError(  # noqa: TRY004
                f"encrypted value field 'kid' must be a string, got {type(key_id).__name__}"
            )
        return cls(key_id, _as_bytes(doc["n"], "n"), _as_bytes(doc["ct"], "ct"))


def _as_bytes(raw: object, field: str) -> bytes:
    # bson.Binary subclasses bytes; bytearray and memoryview come from other drivers and tests.
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    raise ValueError(f"encrypted value field {field!r} must be binary, got {type(raw).__name__}")


class FieldCipher:
    """Encrypts, decrypts, rotates and blind-indexes PII fields with a ring of AES-256 keys.

    ``keys`` maps key id to 32-byte key; new values are encrypted under ``active_key_id`` and
    old ones stay readable while their key id remains in the ring. ``index_key`` is a separate
    32-byte HMAC key for blind indexes: it cannot rotate without re-indexing every value.
    """

    __slots__ = ("_active_key_id", "_aeads", "_index_key")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str, index_key: bytes) -> None:
        if not keys:
            raise ValueError("the key ring is empty: configure at least one encryption key")
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} does not match {KEY_ID_PATTERN.pattern}")
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                raise ValueError(f"key {key_id!r} must be exactly {KEY_SIZE} bytes")
        if active_key_id not in keys:
            raise ValueError(
                f"active key id {active_key_id!r} is not in the key ring "
                f"(configured ids: {sorted(keys)})"
            )
        if not isinstance(index_key, bytes) or len(index_key) != KEY_SIZE:
            raise ValueError(f"the index key must be exactly {KEY_SIZE} bytes")
        # One key for two algorithms weakens both; a copy-paste slip is the usual cause.
        if any(hmac.compare_digest(index_key, key) for key in keys.values()):
            raise ValueError("the index key must differ from every encryption key")
        self._aeads = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active_key_id = active_key_id
        self._index_key = index_key

    @property
    def active_key_id(self) -> str:
        """The id of the key new values are encrypted under."""
        return self._active_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        """The id of every key in the ring (the active one and those kept for reading)."""
        return frozenset(self._aeads)

    def blind_index(self, value: str, context: str) -> str:
        """A deterministic 64-hex-digit HMAC-SHA256 of ``value`` within ``context``.

        Equal values give equal indexes, so a store can look a value up by it, but the clear
        value cannot be derived from it without the index key. Normalise the value (e.g.
        lower-case an e-mail) before calling: the index is exact.
        """
        _check_context(context)
        message = f"{context}\x00{value}".encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()

    def encrypt(self, value: str, context: str) -> EncryptedValue:
        """Encrypt ``value`` under the active key with a fresh random nonce, bound to ``context``.

        The ciphertext is as long as the UTF-8 value plus a 16-byte tag, so lengths are not
        hidden.
        """
        _check_context(context)
        nonce = os.urandom(NONCE_SIZE)
        aead = self._aeads[self._active_key_id]
        ciphertext = aead.encrypt(nonce, value.encode(), context.encode())
        return EncryptedValue(self._active_key_id, nonce, ciphertext)

    def decrypt(self, value: EncryptedValue, context: str) -> str:
        """The clear value, read with the key ``value`` names.

        Raises :class:`UnknownKeyError` when that key id is not in the ring and
        :class:`DecryptionError` when the value was tampered with or belongs to another context.
        """
        _check_context(context)
        aead = self._aeads.get(value.key_id)
        if aead is None:
            raise UnknownKeyError(
                f"no key {value.key_id!r} in the key ring: add it back, then rotate the values "
                f"still encrypted under it to {self._active_key_id!r}"
            )
        try:
            plaintext = aead.decrypt(value.nonce, value.ciphertext, context.encode())
        except InvalidTag:
            raise DecryptionError(
                f"value under key {value.key_id!r} failed authentication in context "
                f"{context!r}: it was altered or belongs to another field"
            ) from None
        return plaintext.decode()

    def needs_rotation(self, value: EncryptedValue) -> bool:
        """True when ``value`` is not encrypted under the active key."""
        return value.key_id != self._active_key_id

    def rotate(self, value: EncryptedValue, context: str) -> EncryptedValue:
        """``value`` re-encrypted under the active key; the clear value is unchanged.

        Always re-encrypts; check :meth:`needs_rotation` first to avoid rewriting current values.
        """
        return self.encrypt(self.decrypt(value, context), context)


def _check_context(context: str) -> None:
    # A NUL would make ("a\0b", "c") and ("a", "b\0c") index the same.
    if not context or "\x00" in context:
        raise ValueError("context must be a non-empty string without NUL characters")


def _decode_key(encoded: str, label: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not, into a 32-byte key."""
    text = encoded.strip()
    if not text:
        raise ValueError(f"{label} is empty; {_GENERATE_HINT}")
    normalised = text.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        key = base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        # from None: the underlying error may quote the offending characters.
        raise ValueError(f"{label} is not valid base64; {_GENERATE_HINT}") from None
    if len(key) != KEY_SIZE:
        raise ValueError(
            f"{label} decodes to {len(key)} bytes but must be exactly {KEY_SIZE}; {_GENERATE_HINT}"
        )
    return key


def parse_key(spec: str, *, label: str = "key") -> bytes:
    """A single base64 32-byte key, such as the blind-index key.

    Raises ``ValueError`` starting with ``label`` on bad base64 or a wrong length; the message
    never contains the key material.
    """
    return _decode_key(spec, label)


def parse_key_ring(spec: str, *, label: str = "key ring") -> dict[str, bytes]:
    """Parse ``"k1:BASE64,k2:BASE64"`` into key id -> 32-byte key.

    Keys are standard or URL-safe base64; whitespace around items is ignored. Raises
    ``ValueError`` naming the bad item by position (and id, when the id is valid) for bad
    base64, a wrong length, an empty, malformed or duplicate id; never with key material.
    """
    if not spec.strip():
        raise ValueError(f"{label} is empty; expected 'id:BASE64[,id:BASE64...]'")
    ring: dict[str, bytes] = {}
    for position, raw_item in enumerate(spec.split(","), start=1):
        item = raw_item.strip()
        where = f"{label} item {position}"
        if not item:
            raise ValueError(f"{where} is empty (stray comma?)")
        key_id, separator, encoded = item.partition(":")
        key_id = key_id.strip()
        if not separator:
            raise ValueError(f"{where} has no ':' between key id and key; expected 'id:BASE64'")
        if not key_id:
            raise ValueError(f"{where} has an empty key id; expected 'id:BASE64'")
        # An invalid id is not echoed: it may be key material pasted in the wrong order.
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise ValueError(f"{where} has a key id that does not match {KEY_ID_PATTERN.pattern}")
        if key_id in ring:
            raise ValueError(f"{where}: key id {key_id!r} appears more than once")
        ring[key_id] = _decode_key(encoded, f"{where} (key {key_id!r})")
    return ring


def generate_key() -> str:
    """A new random 32-byte key as URL-safe base64, for configuration and local runs."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_SIZE)).decode("ascii")


def cipher_from_settings(keys: str, active_key_id: str, index_key: str) -> FieldCipher:
    """Build a :class:`FieldCipher` from configuration strings.

    ``keys`` is a key ring spec (:func:`parse_key_ring`), ``active_key_id`` one of its ids and
    ``index_key`` a single base64 key (:func:`parse_key`). Raises ``ValueError`` saying which
    setting is wrong and how to fix it.
    """
    ring = parse_key_ring(keys, label="PII key ring")
    active = active_key_id.strip()
    if not active:
        raise ValueError(f"PII active key id is empty; set it to one of {sorted(ring)}")
    if active not in ring:
        raise ValueError(
            f"PII active key id {active!r} is not in the PII key ring; "
            f"set it to one of {sorted(ring)} or add that key to the ring"
        )
    return FieldCipher(ring, active, parse_key(index_key, label="PII index key"))
