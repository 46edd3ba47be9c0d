"""What the profile stores hand out is typed: profiles, timeline entries, the privacy export
and privacy request records are records named for the domain, never raw MongoDB documents.
Only values that are free JSON by nature (traits, event properties) stay untyped."""

from __future__ import annotations

from typing import get_type_hints

from lodestar.v1 import events_pb2
from services.profile.records import (
    ConsentEntry,
    ConsentState,
    ExportedEvent,
    ExportedOrder,
    ProfileExport,
    StoredCart,
    TimelineRecord,
    ViewedAt,
)
from services.profile.store import ProfileStore, StoredGroup, StoredProfile
from services.profile.store.privacy import PrivacyRequestStore
from tests.support.records import raw_fields, raw_returns

FREE_JSON = frozenset({"traits", "properties"})


def test_the_profile_stores_return_typed_records() -> None:
    assert raw_returns(ProfileStore) == {}
    assert raw_returns(PrivacyRequestStore, {"events_pb2": events_pb2}) == {}


def test_a_stored_profile_types_everything_but_its_traits() -> None:
    # Every attribute a profile carries is declared, so the check below sees them all.
    assert set(vars(StoredProfile({"_id": "c"}, None))) == set(get_type_hints(StoredProfile))
    assert raw_fields(StoredProfile, free_json=frozenset({"traits"})) == {}
    assert raw_fields(StoredGroup, free_json=frozenset({"traits"})) == {}


def test_the_profile_records_hold_no_raw_documents() -> None:
    for record in (
        ConsentState,
        ConsentEntry,
        StoredCart,
        ViewedAt,
        TimelineRecord,
        ExportedEvent,
        ExportedOrder,
        ProfileExport,
    ):
        assert raw_fields(record, free_json=FREE_JSON) == {}, record.__name__


def test_the_export_names_every_key_it_has() -> None:
    assert set(ProfileExport.__annotations__) == {
        "customer_id",
        "traits",
        "event_counts",
        "first_seen",
        "last_seen",
        "orders",
        "loyalty",
        "events",
        "groups",
    }
