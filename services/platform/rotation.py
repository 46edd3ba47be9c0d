"""Key rotation bookkeeping shared by every store that keeps PII under the key ring.

Each store walks its own collections (the MongoDB code stays in the stores); this module
decides, per stored value, whether it is under an old key and what it re-encrypts to, and
counts what a pass found. Nothing here does I/O or holds a clear value longer than a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.platform.crypto import (
    DecryptionError,
    EncryptedValue,
    FieldCipher,
    UnknownKeyError,
)

# A stored value that is not an encrypted-value document at all.
MALFORMED = "(malformed)"


@dataclass(frozen=True)
class Examined:
    """One stored encrypted value as the current key ring sees it."""

    key_id: str
    # The stored value's nonce, to write its replacement only if it is still the same value.
    nonce: bytes | None
    clear: str | None
    # Set when the value is under an old key and readable: the same clear value under the
    # active key.
    replacement: EncryptedValue | None
    under_old_key: bool

    @property
    def readable(self) -> bool:
        """Whether the key ring decrypts it."""
        return self.clear is not None


def examine(cipher: FieldCipher, stored: object, context: str) -> Examined:
    """Read one stored value: decrypted when the ring can, and re-encrypted under the active
    key when it is under another one. A value the ring cannot read is reported, not raised."""
    try:
        value = EncryptedValue.from_document(stored)
    except ValueError:
        return Examined(MALFORMED, None, None, None, under_old_key=False)
    old = cipher.needs_rotation(value)
    try:
        clear = cipher.decrypt(value, context)
    except (UnknownKeyError, DecryptionError):
        return Examined(value.key_id, value.nonce, None, None, under_old_key=old)
    replacement = cipher.encrypt(clear, context) if old else None
    return Examined(value.key_id, value.nonce, clear, replacement, under_old_key=old)


@dataclass
class Tally:
    """What one pass over one collection found, and what the run changed in it."""

    service: str
    collection: str
    # Encrypted values looked at by the last (counting) pass.
    checked: int = 0
    # Values this run re-encrypted under the active key or moved to their current index.
    rotated: int = 0
    # Values still under an old key, or still under an old blind index: while any are left,
    # the old keys must stay in the ring.
    left: int = 0
    left_by_key: dict[str, int] = field(default_factory=dict)
    stale_index: int = 0
    # Values the ring cannot decrypt: their key is missing from it, or they were altered.
    unreadable: int = 0

    def count(self, found: Examined, *, stale_index: bool = False) -> None:
        """Add one value to the counts of the counting pass."""
        self.checked += 1
        if not found.readable:
            self.unreadable += 1
        if found.under_old_key:
            self.left_by_key[found.key_id] = self.left_by_key.get(found.key_id, 0) + 1
        if stale_index:
            self.stale_index += 1
        if found.under_old_key or stale_index:
            self.left += 1

    def to_json(self) -> dict[str, Any]:
        """The JSON line the rotation command prints for this collection."""
        return {
            "service": self.service,
            "collection": self.collection,
            "checked": self.checked,
            "rotated": self.rotated,
            "left": self.left,
            "left_by_key": dict(sorted(self.left_by_key.items())),
            "stale_index": self.stale_index,
            "unreadable": self.unreadable,
        }


def summary(tallies: list[Tally], cipher: FieldCipher, *, check_only: bool) -> dict[str, Any]:
    """The closing report: per service how much is left, and whether the old keys may go."""
    services: dict[str, dict[str, int]] = {}
    for tally in tallies:
        entry = services.setdefault(tally.service, {"rotated": 0, "left": 0, "unreadable": 0})
        entry["rotated"] += tally.rotated
        entry["left"] += tally.left
        entry["unreadable"] += tally.unreadable
    left = sum(t.left for t in tallies)
    unreadable = sum(t.unreadable for t in tallies)
    by_key: dict[str, int] = {}
    for tally in tallies:
        for key_id, n in tally.left_by_key.items():
            by_key[key_id] = by_key.get(key_id, 0) + n
    old_keys = sorted(k for k in cipher.key_ids if k != cipher.active_key_id)
    return {
        "summary": True,
        "check_only": check_only,
        "services": services,
        "left": left,
        "left_by_key": dict(sorted(by_key.items())),
        "unreadable": unreadable,
        "active_key_id": cipher.active_key_id,
        "old_key_ids": old_keys,
        "old_keys_may_be_dropped": left == 0,
        "message": _message(left, unreadable, by_key, old_keys, cipher, check_only=check_only),
    }


def _message(
    left: int,
    unreadable: int,
    by_key: dict[str, int],
    old_keys: list[str],
    cipher: FieldCipher,
    *,
    check_only: bool,
) -> str:
    parts = []
    if left:
        keys = ", ".join(f"{k}: {n}" for k, n in sorted(by_key.items())) or "none"
        parts.append(
            f"{left} value(s) are still under an old key or an old blind index (by key: "
            f"{keys}); keep every old key in LODESTAR_PII_KEYS and "
            + ("run without --check to rotate them" if check_only else "run this again")
        )
    else:
        drop = ", ".join(old_keys) if old_keys else "no other key is in the ring"
        parts.append(
            "nothing is left under an old key in any service: the old keys may now be "
            f"dropped from LODESTAR_PII_KEYS ({drop}); keep {cipher.active_key_id!r}"
        )
    if unreadable:
        missing = sorted(k for k in by_key if k not in cipher.key_ids)
        hint = f"add key(s) {', '.join(missing)} back to the ring" if missing else "see above"
        parts.append(
            f"{unreadable} value(s) cannot be decrypted with this key ring (a key missing "
            f"from it, or altered data): {hint}"
        )
    return "; ".join(parts)
