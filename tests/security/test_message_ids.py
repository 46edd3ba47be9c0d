"""A reused ``messageId`` never links two people: deduplication keeps a customer's data
with that customer, whoever sends the id (the write key is public in browser SDKs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.local.stack import Stack
from tests.support.kafka import eventually, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e


async def test_another_users_message_id_makes_a_new_customer(
    platform: Platform, stack: Stack
) -> None:
    first, second = unique("victim"), unique("attacker")
    message_id = unique("msg")
    victim = await platform.send(
        "/v1/identify",
        {
            "userId": first,
            "messageId": message_id,
            "traits": {"email": f"{first}@victim.example", "name": "Victim Person"},
        },
    )
    assert victim.status_code == 200
    victim_id = await platform.known_customer(first)
    # The attacker's first event reuses the victim's message id.
    attack = await platform.send(
        "/v1/identify",
        {
            "userId": second,
            "messageId": message_id,
            "traits": {"email": f"{second}@attacker.example", "name": "Other Person"},
        },
    )
    assert attack.status_code == 200

    async def attacker_known() -> bool:
        return await platform.customer("user_id", second) is not None

    await eventually(attacker_known, 30, "the second user's customer", 0.2)
    attacker = await platform.customer("user_id", second)
    victim_now = await platform.customer("user_id", first)
    assert attacker is not None
    assert victim_now is not None
    assert attacker["id"] != victim_id
    assert victim_now["id"] == victim_id
    # Each keeps exactly its own identifiers and traits.
    assert {"type": "user_id", "value": second} not in victim_now["identifiers"]
    assert {"type": "user_id", "value": first} not in attacker["identifiers"]
    assert victim_now["traits"] == {"email": f"{first}@victim.example", "name": "Victim Person"}
    assert attacker["traits"] == {"email": f"{second}@attacker.example", "name": "Other Person"}
    by_email = await platform.customer("email", f"{second}@attacker.example")
    assert by_email is not None
    assert by_email["id"] == attacker["id"]


async def test_a_retry_of_the_same_call_still_counts_once(platform: Platform) -> None:
    user_id = unique("retry")
    happened = datetime.now(UTC) - timedelta(minutes=5)
    call = {
        "userId": user_id,
        "event": "Retried",
        "messageId": unique("msg"),
        "timestamp": happened.isoformat(),
    }
    # SDKs restamp sentAt on every retry; the call is otherwise the same.
    for delay_s in (1, 20, 60):
        sent_at = happened + timedelta(seconds=delay_s)
        response = await platform.send("/v1/track", {**call, "sentAt": sent_at.isoformat()})
        assert response.status_code == 200
    # One user's events share a partition: once the marker shows, the retries were handled.
    await platform.send("/v1/track", {"userId": user_id, "event": "Marker"})
    customer = await platform.wait_for_count(user_id, "Marker", 1)
    counts = {c["name"]: c["count"] for c in customer["eventCounts"]}
    assert counts == {"Retried": 1, "Marker": 1}
