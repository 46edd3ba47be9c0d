"""What a stored pass shows: layout per kind, tier colours, templates, update times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from services.platform.errors import InvalidArgument
from services.wallet.applepass import pass_json
from services.wallet.passes import authentication_token, pass_content
from services.wallet.records import NewPass
from services.wallet.store import next_update_time
from services.wallet.templates import DEFAULT_TEMPLATE, PassKind, template_named
from tests.support.wallet import pass_problems
from tests.unit.wallet.conftest import PASS_TYPE_ID, TEAM_ID

AT = datetime(2026, 11, 20, 9, 0, 0, 400_000, tzinfo=UTC)


def stored(kind: PassKind, **fields: Any) -> NewPass:
    # Only what pass_content reads (and expires_at None for cards, as an old pass has it).
    doc = {
        "_id": "serial-1",
        "kind": kind.value,
        "template": "default",
        "authentication_token": authentication_token(),
        "fields": {"tier": "Silver", "points": 10, "cashback_minor": 1250, **fields},
        "expires_at": AT + timedelta(days=30) if kind is PassKind.COUPON else None,
    }
    return cast(NewPass, doc)


@pytest.mark.parametrize("kind", list(PassKind))
def test_every_kind_renders_a_valid_pass(kind: PassKind) -> None:
    content = pass_content(stored(kind), "https://wallet.example.com")
    doc = pass_json(content, PASS_TYPE_ID, TEAM_ID)
    assert pass_problems(doc) == []
    assert doc["sharingProhibited"] is True
    assert doc["webServiceURL"] == "https://wallet.example.com"


def test_the_loyalty_card_shows_points_cashback_and_tier() -> None:
    doc = pass_json(
        pass_content(stored(PassKind.STORE_CARD), "https://w.example.com"), PASS_TYPE_ID, TEAM_ID
    )
    card = doc["storeCard"]
    assert card["headerFields"][0]["value"] == 10
    assert card["primaryFields"][0] == {
        "key": "cashback",
        "value": 12.5,
        "label": "cashback",
        "changeMessage": "Your cashback balance is %@",
        "textAlignment": "PKTextAlignmentLeft",
        "currencyCode": "EUR",
    }
    assert card["secondaryFields"][0]["changeMessage"] == "Congratulations, you are now %@"


def test_colours_follow_the_tier() -> None:
    silver = pass_content(stored(PassKind.STORE_CARD), "https://w.example.com")
    gold = pass_content(stored(PassKind.STORE_CARD, tier="Gold"), "https://w.example.com")
    unknown = pass_content(stored(PassKind.STORE_CARD, tier="Mystery"), "https://w.example.com")
    assert silver.colours == DEFAULT_TEMPLATE.tier_colours["Silver"]
    assert gold.colours == DEFAULT_TEMPLATE.tier_colours["Gold"]
    assert unknown.colours == DEFAULT_TEMPLATE.tier_colours[DEFAULT_TEMPLATE.default_tier]
    assert silver.images["icon.png"] != gold.images["icon.png"]


def test_a_coupon_expires() -> None:
    doc = pass_json(
        pass_content(stored(PassKind.COUPON), "https://w.example.com"), PASS_TYPE_ID, TEAM_ID
    )
    assert doc["expirationDate"].startswith("2026-12-20T09:00:00")
    assert doc["coupon"]["secondaryFields"][0]["key"] == "expires"


def test_templates_by_name() -> None:
    assert template_named("") is DEFAULT_TEMPLATE
    with pytest.raises(InvalidArgument, match="unknown template 'nope'; known templates: default"):
        template_named("nope")


def test_tokens_are_long_and_fresh() -> None:
    tokens = {authentication_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 32 for t in tokens)


def test_update_times_move_by_at_least_a_second() -> None:
    first = next_update_time(None, AT)
    assert first == AT.replace(microsecond=0)
    same_second = next_update_time(first, AT + timedelta(milliseconds=300))
    assert same_second == first + timedelta(seconds=1)
    later = next_update_time(same_second, AT + timedelta(minutes=5))
    assert later == (AT + timedelta(minutes=5)).replace(microsecond=0)
