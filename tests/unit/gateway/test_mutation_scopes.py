"""Every mutation needs its one scope: a key without it is refused with FORBIDDEN naming the
scope, before any service is called or any event produced."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import build_schema

from gateway.scopes import Scope
from tests.unit.gateway.mutation_support import SCHEMA, graphql, only_error, principal_without
from tests.unit.gateway.test_ingest_http import RecordingBus

# Each mutation with arguments it accepts, and the scope it needs.
MUTATIONS: dict[str, tuple[str, Scope]] = {
    "track": ('track(userId: "u", event: "E") { accepted }', Scope.WRITE_EVENTS),
    "identify": ('identify(userId: "u", traits: {a: 1}) { accepted }', Scope.WRITE_EVENTS),
    "alias": ('alias(userId: "u", previousId: "p") { accepted }', Scope.WRITE_EVENTS),
    "setConsent": (
        'setConsent(customerId: "c", purpose: "analytics", state: "granted") { state }',
        Scope.WRITE_EVENTS,
    ),
    "createSegment": ('createSegment(name: "n", rule: {a: 1}) { id }', Scope.WRITE_SEGMENTS),
    "updateSegment": ('updateSegment(id: "s", name: "n") { id }', Scope.WRITE_SEGMENTS),
    "deleteSegment": ('deleteSegment(id: "s") { id }', Scope.WRITE_SEGMENTS),
    "recomputeScores": ("recomputeScores { modelVersion }", Scope.WRITE_SEGMENTS),
    "issuePass": (
        'issuePass(customerId: "c", kind: STORE_CARD, platform: APPLE) { downloadUrl }',
        Scope.WALLET,
    ),
    "passDownloadUrl": ('passDownloadUrl(serialNumber: "s") { url }', Scope.WALLET),
    "sendPassMessage": (
        'sendPassMessage(serialNumber: "s", header: "h", body: "b") { passes }',
        Scope.WALLET,
    ),
    "voidPass": ('voidPass(serialNumber: "s") { voided }', Scope.WALLET),
    "putOffer": (
        'putOffer(offer: {offerId: "o", segmentId: "s", title: "t"}) { offerId }',
        Scope.WALLET,
    ),
    "trainRecommender": ("trainRecommender { version }", Scope.ADMIN),
    "requestErasure": ('requestErasure(customerId: "c") { id }', Scope.PRIVACY),
    "requestExport": ('requestExport(customerId: "c") { id }', Scope.PRIVACY),
    "requestPrivacy": ('requestPrivacy(kind: ERASE, customerId: "c") { id }', Scope.PRIVACY),
    "createApiKey": ('createApiKey(name: "n", scopes: ["wallet"]) { key }', Scope.ADMIN),
    "revokeApiKey": ('revokeApiKey(id: "0123456789abcdef") { id }', Scope.ADMIN),
}


class Untouchable:
    """Any service call fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused mutation reached the {name} service")


def test_every_mutation_is_listed_here() -> None:
    mutation = build_schema(str(SCHEMA)).mutation_type
    assert mutation is not None
    assert set(mutation.fields) == set(MUTATIONS)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
async def test_a_key_without_the_scope_is_forbidden_naming_it(name: str) -> None:
    selection, scope = MUTATIONS[name]
    bus = RecordingBus()
    body = await graphql(
        Untouchable(), f"mutation {{ {selection} }}", principal=principal_without(scope), bus=bus
    )
    error = only_error(body)
    assert error["extensions"] == {"code": "FORBIDDEN", "scope": scope.value}, error
    assert scope.value in error["message"]
    # Null whole, or (a nullable root field) null under its name.
    assert not any((body["data"] or {}).values())
    assert bus.produced == []
