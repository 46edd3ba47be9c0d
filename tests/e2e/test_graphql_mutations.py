"""The GraphQL mutations on the running platform: events tracked through GraphQL land in the
profile as the HTTP API's do; a segment with a bad rule is refused naming the JSON path of
the bad part and a good one is listed; an Apple pass issued through GraphQL downloads as a
signed .pkpass by its link until the link expires, a Google pass comes with its save link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.kafka import eventually, unique
from tests.support.platform import Platform
from tests.support.wallet import manifest_problems, unzip, verify_signature

pytestmark = pytest.mark.e2e

IDENTIFY = """
mutation($userId: String!, $traits: JSON) {
  identify(userId: $userId, traits: $traits) { accepted eventId }
}
"""
TRACK = """
mutation($userId: String!, $event: String!, $properties: JSON, $messageId: String) {
  track(userId: $userId, event: $event, properties: $properties, messageId: $messageId) {
    accepted eventId messageId
  }
}
"""
CREATE_SEGMENT = """
mutation($id: ID!, $name: String!, $rule: JSON!) {
  createSegment(id: $id, name: $name, rule: $rule) { id name version status }
}
"""
ISSUE = """
mutation($customerId: ID!, $platform: WalletPlatform!) {
  issuePass(customerId: $customerId, kind: STORE_CARD, platform: $platform) {
    pass { serialNumber platform }
    saveLink downloadUrl downloadUrlExpiresAt
  }
}
"""


async def mutate(platform: Platform, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await platform.graphql(query, variables)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_events_tracked_through_graphql_land_like_the_http_apis(
    platform: Platform,
) -> None:
    user = unique("gqltrack")
    body = await mutate(platform, IDENTIFY, {"userId": user, "traits": {"plan": "pro"}})
    assert body["data"]["identify"]["accepted"] is True, body
    body = await mutate(
        platform,
        TRACK,
        {"userId": user, "event": "Wishlist Added", "properties": {"sku": "a"}, "messageId": "m1"},
    )
    assert "errors" not in body, body
    assert body["data"]["track"]["messageId"] == "m1"
    sent = await platform.send(
        "/v1/track", {"userId": user, "event": "Wishlist Added", "properties": {"sku": "b"}}
    )
    assert sent.status_code == 200, sent.text
    customer = await platform.wait_for_count(user, "Wishlist Added", 2)
    assert customer["traits"]["plan"] == "pro"
    body = await mutate(platform, TRACK, {"userId": user, "event": "Bad\u0000Name"})
    error = body["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "path": "$.event"}, error


async def test_a_bad_rule_names_its_path_and_a_good_segment_is_listed(
    platform: Platform,
) -> None:
    tag = unique("gqlseg").replace("-", "").lower()
    bad = {
        "all": [
            {"field": "traits.plan", "op": "eq", "value": "pro"},
            {"field": "nosuch.thing", "op": "eq", "value": 1},
        ]
    }
    body = await mutate(platform, CREATE_SEGMENT, {"id": f"bad{tag}", "name": "Bad", "rule": bad})
    error = body["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "path": "$.all[1].field"}, error
    good = {"field": "traits.plan", "op": "eq", "value": tag}
    body = await mutate(platform, CREATE_SEGMENT, {"id": tag, "name": "Good", "rule": good})
    assert "errors" not in body, body
    assert body["data"]["createSegment"]["id"] == tag
    listed = (await platform.graphql("{ segments { id } }")).json()
    assert tag in [s["id"] for s in listed["data"]["segments"]]
    assert f"bad{tag}" not in [s["id"] for s in listed["data"]["segments"]]


async def test_an_apple_pass_downloads_by_its_link_until_it_expires(
    platform: Platform, tmp_path: Path
) -> None:
    stack = platform.stack
    customer_id = await platform.known_customer(unique("gqlpass"))
    body = await mutate(platform, ISSUE, {"customerId": customer_id, "platform": "APPLE"})
    assert "errors" not in body, body
    issued = body["data"]["issuePass"]
    assert issued["saveLink"] is None
    url = issued["downloadUrl"]
    assert url.startswith(f"{stack.passkit_url}/downloads/{issued['pass']['serialNumber']}?")
    async with httpx.AsyncClient(timeout=10) as browser:
        # No key of any kind: the link is the credential.
        downloaded = await browser.get(url)
        assert downloaded.status_code == 200, downloaded.text
        files = unzip(downloaded.content)
        assert manifest_problems(files) == []
        verified = verify_signature(files, stack.wallet_certs_dir / "wwdr.pem", tmp_path)
        assert verified.returncode == 0, verified.stderr
        tampered = await browser.get(url.replace("expires=", "expires=1"))
        assert tampered.status_code == 403

        async def expired() -> bool:
            return (await browser.get(url)).status_code == 410

        await eventually(expired, 30, "the download link to expire", 0.5)
    fresh = await mutate(
        platform,
        "mutation($s: String!) { passDownloadUrl(serialNumber: $s) { url } }",
        {"s": issued["pass"]["serialNumber"]},
    )
    assert fresh["data"]["passDownloadUrl"]["url"] != url


async def test_a_google_pass_comes_with_its_save_link(platform: Platform) -> None:
    customer_id = await platform.known_customer(unique("gqlgoogle"))
    body = await mutate(platform, ISSUE, {"customerId": customer_id, "platform": "GOOGLE"})
    assert "errors" not in body, body
    issued = body["data"]["issuePass"]
    assert issued["saveLink"].startswith(f"{platform.stack.google_url}/save/")
    assert issued["downloadUrl"] is None
    link = "mutation($s: String!) { passDownloadUrl(serialNumber: $s) { url } }"
    body = await mutate(platform, link, {"s": issued["pass"]["serialNumber"]})
    assert body["errors"][0]["extensions"]["code"] == "FAILED_PRECONDITION", body
    body = await mutate(platform, link, {"s": unique("noserial")})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body
