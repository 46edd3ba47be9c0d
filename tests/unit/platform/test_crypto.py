"""FieldCipher: AES-256-GCM PII fields, key rotation, blind indexes and key configuration."""

from __future__ import annotations

import base64
import dataclasses
import re
from typing import Any

import pytest

from services.platform.crypto import (
    DecryptionError,
    EncryptedValue,
    FieldCipher,
    UnknownKeyError,
    cipher_from_settings,
    generate_key,
    parse_key,
    parse_key_ring,
)

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
INDEX_KEY = bytes(range(64, 96))
OTHER_INDEX_KEY = bytes(range(96, 128))
EMAIL = "ada.lovelace@example.com"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def urlsafe_b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


@pytest.fixture
def cipher() -> FieldCipher:
    return FieldCipher({"k1": K1}, "k1", INDEX_KEY)


# --- encryption -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [EMAIL, "+44 20 7946 0958", "", "Zoë Ångström 山田", "x" * 10_000]
)
def test_round_trip(cipher: FieldCipher, value: str) -> None:
    encrypted = cipher.encrypt(value, "email")

    assert encrypted.key_id == "k1"
    assert len(encrypted.nonce) == 12
    assert cipher.decrypt(encrypted, "email") == value


def test_each_encryption_uses_a_fresh_nonce(cipher: FieldCipher) -> None:
    values = [cipher.encrypt(EMAIL, "email") for _ in range(50)]

    assert len({value.nonce for value in values}) == 50
    assert len({value.ciphertext for value in values}) == 50


@pytest.mark.parametrize("value", [EMAIL, "+15550100", "a" * 64, "aaaa@aaaa.aa"])
def test_ciphertext_never_contains_the_plaintext(cipher: FieldCipher, value: str) -> None:
    encrypted = cipher.encrypt(value, "email")
    stored = encrypted.to_document()

    assert value.encode() not in encrypted.ciphertext
    assert all(value.encode() not in field for field in (stored["n"], stored["ct"]))
    # AES-GCM adds exactly its 16-byte tag.
    assert len(encrypted.ciphertext) == len(value.encode()) + 16


def test_decrypting_under_another_context_fails(cipher: FieldCipher) -> None:
    encrypted = cipher.encrypt(EMAIL, "email")

    with pytest.raises(DecryptionError, match="'phone'") as caught:
        cipher.decrypt(encrypted, "phone")
    assert EMAIL not in str(caught.value)


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
@pytest.mark.parametrize("position", [0, 5, -1])
def test_tampered_value_fails(cipher: FieldCipher, field: str, position: int) -> None:
    encrypted = cipher.encrypt(EMAIL, "email")
    nonce, ciphertext = bytearray(encrypted.nonce), bytearray(encrypted.ciphertext)
    (nonce if field == "nonce" else ciphertext)[position] ^= 0x01
    tampered = EncryptedValue(encrypted.key_id, bytes(nonce), bytes(ciphertext))
    assert tampered != encrypted

    with pytest.raises(DecryptionError):
        cipher.decrypt(tampered, "email")


def test_value_swapped_to_another_key_id_fails() -> None:
    cipher = FieldCipher({"k1": K1, "k2": K2}, "k1", INDEX_KEY)
    encrypted = cipher.encrypt(EMAIL, "email")

    with pytest.raises(DecryptionError):
        cipher.decrypt(dataclasses.replace(encrypted, key_id="k2"), "email")


def test_unknown_key_id_names_the_key_but_not_the_plaintext(cipher: FieldCipher) -> None:
    other = FieldCipher({"k9": K2}, "k9", INDEX_KEY)
    encrypted = other.encrypt(EMAIL, "email")

    with pytest.raises(UnknownKeyError, match="'k9'") as caught:
        cipher.decrypt(encrypted, "email")
    assert isinstance(caught.value, ValueError)
    assert EMAIL not in str(caught.value)
    assert EMAIL not in repr(caught.value)


@pytest.mark.parametrize("context", ["", "em\x00ail"])
def test_bad_context_is_rejected(cipher: FieldCipher, context: str) -> None:
    with pytest.raises(ValueError, match="context"):
        cipher.encrypt(EMAIL, context)
    with pytest.raises(ValueError, match="context"):
        cipher.blind_index(EMAIL, context)


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_moves_a_value_to_the_active_key() -> None:
    old = FieldCipher({"k1": K1}, "k1", INDEX_KEY).encrypt(EMAIL, "email")
    ring = FieldCipher({"k1": K1, "k2": K2}, "k2", INDEX_KEY)

    assert ring.active_key_id == "k2"
    assert ring.needs_rotation(old)
    assert ring.decrypt(old, "email") == EMAIL

    rotated = ring.rotate(old, "email")

    assert rotated.key_id == "k2"
    assert not ring.needs_rotation(rotated)
    assert rotated.ciphertext != old.ciphertext
    assert ring.decrypt(rotated, "email") == EMAIL
    assert FieldCipher({"k2": K2}, "k2", INDEX_KEY).decrypt(rotated, "email") == EMAIL


def test_new_values_use_the_active_key_only() -> None:
    ring = FieldCipher({"k1": K1, "k2": K2}, "k2", INDEX_KEY)

    assert ring.encrypt(EMAIL, "email").key_id == "k2"
    assert not ring.needs_rotation(ring.encrypt(EMAIL, "email"))


def test_values_under_a_removed_key_fail_with_unknown_key() -> None:
    old = FieldCipher({"k1": K1}, "k1", INDEX_KEY).encrypt(EMAIL, "email")
    without_k1 = FieldCipher({"k2": K2}, "k2", INDEX_KEY)

    with pytest.raises(UnknownKeyError, match="'k1'") as caught:
        without_k1.decrypt(old, "email")
    assert EMAIL not in str(caught.value)
    with pytest.raises(UnknownKeyError):
        without_k1.rotate(old, "email")


# --- blind index ------------------------------------------------------------------------------


def test_blind_index_is_deterministic_hex_sha256(cipher: FieldCipher) -> None:
    first = cipher.blind_index(EMAIL, "email")

    assert first == cipher.blind_index(EMAIL, "email")
    assert first == FieldCipher({"k2": K2}, "k2", INDEX_KEY).blind_index(EMAIL, "email")
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert EMAIL not in first
    assert first != cipher.blind_index("grace.hopper@example.com", "email")


def test_blind_index_differs_per_context(cipher: FieldCipher) -> None:
    assert cipher.blind_index("15550100", "email") != cipher.blind_index("15550100", "phone")


def test_blind_index_separates_context_from_value(cipher: FieldCipher) -> None:
    # Without a separator these two would hash the same message "emailx".
    assert cipher.blind_index("x", "email") != cipher.blind_index("lx", "emai")


def test_blind_index_differs_per_index_key(cipher: FieldCipher) -> None:
    other = FieldCipher({"k1": K1}, "k1", OTHER_INDEX_KEY)

    assert cipher.blind_index(EMAIL, "email") != other.blind_index(EMAIL, "email")


# --- stored documents -------------------------------------------------------------------------


def test_document_round_trip(cipher: FieldCipher) -> None:
    encrypted = cipher.encrypt(EMAIL, "email")
    doc = encrypted.to_document()

    assert set(doc) == {"kid", "n", "ct"}
    assert doc["kid"] == "k1"
    assert isinstance(doc["n"], bytes)
    assert isinstance(doc["ct"], bytes)
    assert EncryptedValue.from_document(doc) == encrypted
    assert cipher.decrypt(EncryptedValue.from_document(doc), "email") == EMAIL


def test_document_accepts_bytes_like_binary(cipher: FieldCipher) -> None:
    encrypted = cipher.encrypt(EMAIL, "email")
    doc = {"kid": "k1", "n": bytearray(encrypted.nonce), "ct": memoryview(encrypted.ciphertext)}

    assert EncryptedValue.from_document(doc) == encrypted


def good_document() -> dict[str, Any]:
    return {"kid": "k1", "n": bytes(12), "ct": bytes(32)}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (EMAIL, "must be a mapping, got str"),
        (None, "must be a mapping, got NoneType"),
        ({"kid": "k1", "n": bytes(12)}, r"missing field\(s\) \['ct'\]"),
        ({}, r"missing field\(s\) \['kid', 'n', 'ct'\]"),
        ({**good_document(), "email": EMAIL}, r"unexpected field\(s\) \['email'\]"),
        ({**good_document(), "kid": 7}, "'kid' must be a string, got int"),
        ({**good_document(), "n": "not-bytes"}, "'n' must be binary, got str"),
        ({**good_document(), "ct": EMAIL}, "'ct' must be binary, got str"),
        ({**good_document(), "n": bytes(8)}, "nonce must be 12 bytes"),
        ({**good_document(), "ct": bytes(4)}, "ciphertext must be at least 16 bytes"),
        ({**good_document(), "kid": "k 1"}, "key id must match"),
    ],
)
def test_malformed_document_is_rejected(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        EncryptedValue.from_document(doc)
    assert EMAIL not in str(caught.value)


# --- construction -----------------------------------------------------------------------------


def test_cipher_rejects_a_short_key_by_id() -> None:
    with pytest.raises(ValueError, match="'k2' must be exactly 32 bytes"):
        FieldCipher({"k1": K1, "k2": K2[:16]}, "k1", INDEX_KEY)


def test_cipher_rejects_an_active_id_outside_the_ring() -> None:
    with pytest.raises(ValueError, match="'k3' is not in the key ring"):
        FieldCipher({"k1": K1, "k2": K2}, "k3", INDEX_KEY)


def test_cipher_rejects_an_empty_ring() -> None:
    with pytest.raises(ValueError, match="key ring is empty"):
        FieldCipher({}, "k1", INDEX_KEY)


def test_cipher_rejects_a_short_index_key() -> None:
    with pytest.raises(ValueError, match="index key must be exactly 32 bytes"):
        FieldCipher({"k1": K1}, "k1", INDEX_KEY[:31])


def test_cipher_rejects_an_index_key_reused_as_encryption_key() -> None:
    with pytest.raises(ValueError, match="index key must differ"):
        FieldCipher({"k1": K1, "k2": K2}, "k1", K2)


# --- key configuration ------------------------------------------------------------------------


def test_parse_key_ring_accepts_standard_and_urlsafe_base64_with_whitespace() -> None:
    # 0xfb.. bytes encode to "+" and "/" in standard base64 and "-" and "_" in URL-safe.
    k3 = bytes([0xFB, 0xFF] * 16)
    unpadded = urlsafe_b64(K2).rstrip("=")
    spec = f"  k1:{b64(K1)} ,\n k2 : {unpadded},k_3-x:{urlsafe_b64(k3)}  "

    assert parse_key_ring(spec) == {"k1": K1, "k2": K2, "k_3-x": k3}
    assert parse_key_ring(f"k3:{b64(k3)}") == {"k3": k3}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "key ring is empty"),
        (f"k1:{b64(K1)},k2:{b64(K2)[:-4]}!!!!", r"item 2 \(key 'k2'\) is not valid base64"),
        (f"k1:{b64(K1[:16])}", r"item 1 \(key 'k1'\) decodes to 16 bytes"),
        (f"k1:{b64(K1)},k1:{b64(K2)}", "item 2: key id 'k1' appears more than once"),
        (f"k1:{b64(K1)},k/2:{b64(K2)}", "item 2 has a key id that does not match"),
        (f"{'k' * 33}:{b64(K2)}", "item 1 has a key id that does not match"),
        (f":{b64(K2)}", "item 1 has an empty key id"),
        (f"{b64(K2)}", "item 1 has no ':'"),
        (f"k1:{b64(K1)},,k2:{b64(K2)}", "item 2 is empty"),
        ("k1:", r"item 1 \(key 'k1'\) is empty"),
    ],
)
def test_parse_key_ring_errors_name_the_item_but_not_the_key(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_key_ring(spec)
    text = str(caught.value)
    for secret in (b64(K1), b64(K2), b64(K1[:16]), b64(K2)[:-4], urlsafe_b64(K2)):
        assert secret not in text


def test_parse_key_ring_does_not_echo_reversed_items() -> None:
    # Key material pasted where the id belongs must not reach a log through the error.
    with pytest.raises(ValueError, match="does not match") as caught:
        parse_key_ring(f"{b64(K1)}:k1")
    assert b64(K1) not in str(caught.value)
    assert b64(K1)[:20] not in str(caught.value)


def test_parse_key_decodes_one_key() -> None:
    assert parse_key(f" {b64(INDEX_KEY)}\n") == INDEX_KEY
    assert parse_key(urlsafe_b64(INDEX_KEY).rstrip("=")) == INDEX_KEY


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "index key is empty"),
        ("   ", "index key is empty"),
        (b64(INDEX_KEY)[:-2] + "*=", "index key is not valid base64"),
        (b64(INDEX_KEY[:16]), "index key decodes to 16 bytes but must be exactly 32"),
        (b64(INDEX_KEY + b"!"), "index key decodes to 33 bytes"),
        ("k1:" + b64(INDEX_KEY), "index key is not valid base64"),
    ],
)
def test_parse_key_errors_never_echo_the_key(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_key(spec, label="index key")
    assert "generate_key" in str(caught.value)
    if spec.strip():
        assert spec.strip() not in str(caught.value)
        assert b64(INDEX_KEY)[:20] not in str(caught.value)


def test_generated_keys_parse_to_distinct_32_byte_keys() -> None:
    first, second = generate_key(), generate_key()

    assert len(parse_key(first)) == 32
    assert parse_key(first) != parse_key(second)
    assert parse_key_ring(f"k1:{first}") == {"k1": parse_key(first)}


def test_cipher_from_settings_builds_a_working_cipher() -> None:
    cipher = cipher_from_settings(f"k1:{b64(K1)},k2:{b64(K2)}", " k2 ", b64(INDEX_KEY))

    assert cipher.active_key_id == "k2"
    old = FieldCipher({"k1": K1}, "k1", INDEX_KEY).encrypt(EMAIL, "email")
    assert cipher.decrypt(old, "email") == EMAIL
    assert cipher.blind_index(EMAIL, "email") == (
        FieldCipher({"k1": K1}, "k1", INDEX_KEY).blind_index(EMAIL, "email")
    )


@pytest.mark.parametrize(
    ("keys", "active", "index_key", "message"),
    [
        (f"k1:{b64(K1)}", "k2", b64(INDEX_KEY), r"active key id 'k2' is not in .*\['k1'\]"),
        (f"k1:{b64(K1)}", "", b64(INDEX_KEY), r"active key id is empty.*\['k1'\]"),
        ("", "k1", b64(INDEX_KEY), "PII key ring is empty"),
        (f"k1:{b64(K1[:16])}", "k1", b64(INDEX_KEY), "PII key ring item 1 .* 16 bytes"),
        (f"k1:{b64(K1)}", "k1", "", "PII index key is empty"),
        (f"k1:{b64(K1)}", "k1", b64(INDEX_KEY[:16]), "PII index key decodes to 16 bytes"),
        (f"k1:{b64(K1)}", "k1", b64(K1), "index key must differ"),
    ],
)
def test_cipher_from_settings_says_which_setting_is_wrong(
    keys: str, active: str, index_key: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        cipher_from_settings(keys, active, index_key)
    for secret in (b64(K1), b64(K1[:16]), b64(INDEX_KEY), b64(INDEX_KEY[:16])):
        assert secret not in str(caught.value)
