"""What the identity store hands out is typed: its public methods return records (merges,
identifiers, ownerships), never raw MongoDB documents, so ``mypy`` checks every field read."""

from __future__ import annotations

from services.identity.records import MergeRecord, StoredIdentifier
from services.identity.store import IdentityStore
from services.platform.mongo import Document
from tests.support.records import raw_fields, raw_returns


def test_the_identity_store_returns_typed_records() -> None:
    assert raw_returns(IdentityStore) == {}


def test_the_identity_records_hold_no_raw_documents() -> None:
    assert raw_fields(MergeRecord) == {}
    assert raw_fields(StoredIdentifier) == {}
    assert MergeRecord.__required_keys__ == {
        "_id",
        "survivor_id",
        "merged_ids",
        "caused_by_event_id",
        "at",
    }


class _Leaky:
    """A store-shaped class handing out raw documents, to prove the check catches them."""

    async def one(self) -> Document | None:
        return None

    async def many(self) -> list[dict[str, object]]:
        return []

    def _private(self) -> Document:
        return {}


def test_the_check_catches_raw_documents_and_skips_private_methods() -> None:
    assert raw_returns(_Leaky) == {"one": ["dict[str, Any]"]}
