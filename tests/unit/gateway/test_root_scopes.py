"""Every root field (query, mutation, subscription) needs exactly the one scope this table
names: a field added without a scope, or with another one, fails here. What a refusal looks
like is tested per field kind (test_mutation_scopes, test_gateway_reads, test_graphql_ws)."""

from __future__ import annotations

import pytest

from gateway.schema import build_schema
from gateway.scopes import Scope, missing_scope_message
from gateway.settings import GatewaySettings

R, PII, EVENTS, SEGMENTS = (
    Scope.READ_CUSTOMERS,
    Scope.READ_PII,
    Scope.WRITE_EVENTS,
    Scope.WRITE_SEGMENTS,
)
WALLET, PRIVACY, ADMIN = Scope.WALLET, Scope.PRIVACY, Scope.ADMIN

ROOT_SCOPES: dict[str, dict[str, Scope]] = {
    "Query": {
        "customer": R,
        "customers": R,
        "segment": R,
        "segments": R,
        "item": R,
        "walletPass": R,
        "privacyRequest": PRIVACY,
        "apiKeys": ADMIN,
    },
    "Mutation": {
        "track": EVENTS,
        "identify": EVENTS,
        "alias": EVENTS,
        "setConsent": EVENTS,
        "createSegment": SEGMENTS,
        "updateSegment": SEGMENTS,
        "deleteSegment": SEGMENTS,
        "recomputeScores": SEGMENTS,
        "issuePass": WALLET,
        "passDownloadUrl": WALLET,
        "sendPassMessage": WALLET,
        "voidPass": WALLET,
        "putOffer": WALLET,
        "trainRecommender": ADMIN,
        "requestErasure": PRIVACY,
        "requestExport": PRIVACY,
        "requestPrivacy": PRIVACY,
        "createApiKey": ADMIN,
        "revokeApiKey": ADMIN,
    },
    "Subscription": {
        "customerChanged": R,
        "segmentMembership": R,
        "passEvents": WALLET,
    },
}


def declared(type_name: str) -> dict[str, list[Scope]]:
    """Each root field of ``type_name`` with the scopes its permission classes require."""
    schema = build_schema(GatewaySettings.model_construct())
    definition = schema.get_type_by_name(type_name)
    fields = getattr(definition, "fields", [])
    names = schema.config.name_converter
    return {
        names.get_graphql_name(field): [p.required for p in field.permission_classes]
        for field in fields
    }


@pytest.mark.parametrize("type_name", sorted(ROOT_SCOPES))
def test_each_root_field_needs_exactly_its_scope(type_name: str) -> None:
    assert declared(type_name) == {name: [scope] for name, scope in ROOT_SCOPES[type_name].items()}


def test_read_pii_is_never_a_door_of_its_own() -> None:
    # It only unmasks values under read:customers fields.
    assert PII not in {s for fields in ROOT_SCOPES.values() for s in fields.values()}


def test_a_refusal_names_the_scope() -> None:
    assert missing_scope_message(Scope.WALLET) == "this API key lacks the scope wallet"
