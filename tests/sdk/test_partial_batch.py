"""A batch of 100 calls with 3 bad ones, as an SDK sends it: the 97 good calls land, the answer
is 200 (SDKs drop a batch answered 400 and never retry it) and names each bad call by index and
field, without echoing what it carried."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdk.checks import counts, settled
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

# Where the bad calls are; each is refused for its own reason.
BAD_AT = (17, 50, 98)


def bad_calls(user_id: str, email: str) -> dict[int, tuple[str, dict[str, Any]]]:
    """index -> (the field the answer must name, a call the spec refuses there)."""
    return {
        17: ("event", {"type": "track", "userId": user_id, "traits": {"email": email}}),
        50: ("userId", {"type": "track", "event": "Item Viewed", "properties": {"n": 50}}),
        98: (
            "timestamp",
            {"type": "track", "userId": user_id, "event": "Item Viewed", "timestamp": "soon"},
        ),
    }


async def test_batch_of_100_with_3_bad_lands_97_and_names_the_3(platform: Platform) -> None:
    user_id = unique("batch-user")
    email = f"{user_id}@example.com"
    bad = bad_calls(user_id, email)
    batch = [
        bad[index][1]
        if index in bad
        else {
            "type": "track",
            "userId": user_id,
            "event": "Item Viewed",
            "messageId": f"{user_id}-{index}",
            "properties": {"n": index},
        }
        for index in range(100)
    ]
    response = await platform.send("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True, body
    assert body["accepted"] == 97, body
    rejected = {item["index"]: item for item in body["rejected"]}
    assert sorted(rejected) == list(BAD_AT), body
    for index, (field, _) in bad.items():
        item = rejected[index]
        assert item["path"] == f"batch[{index}].{field}", item
        assert isinstance(item["code"], str), item
        assert item["code"], item
        assert item["message"], item
    # The bad call's e-mail is personal data: the answer names the field, never the value.
    assert email not in response.text

    marker = await platform.send(
        "/v1/track", {"userId": user_id, "event": "Marker", "messageId": f"{user_id}-marker"}
    )
    assert marker.status_code == 200, marker.text
    # Same key, same partition: once the marker is in, so is everything sent before it.
    await settled(
        platform,
        "user_id",
        user_id,
        lambda c: counts(c) == {"Item Viewed": 97, "Marker": 1},
        f"{user_id}: exactly the batch's 97 good calls, then the marker",
    )
