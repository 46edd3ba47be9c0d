"""What the gateway logs about failed GraphQL requests: a code, the operation name and where,
never the query source, the variables or an error message that echoes them. Client errors
are INFO without a traceback; only faults are ERROR.

The app runs without its lifespan, so no service client is open: a query that reaches a
resolver fails inside the gateway, which is how the tests cause an internal fault.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.settings import GatewaySettings
from services.platform.logs import JsonFormatter
from tests.support.keys import SHARED_BEARER, keyed_app

SETTINGS = GatewaySettings(write_key="wk_test_12345")
BEARER = SHARED_BEARER
EMAIL = "ada.lovelace@example.com"
PHONE = "+33612345678"
SECRETS = (EMAIL, PHONE, "ada.lovelace", "612345678")
BY_EMAIL = f'customer(by: {{identifier: {{type: "email", value: "{EMAIL}"}}}})'

# One of each kind of failure, each carrying the e-mail and the phone in its source or
# variables: (name, request body, expected code).
FAILURES: list[tuple[str, dict[str, Any], str]] = [
    (
        "syntax",
        {"query": f'query Lookup {{ {BY_EMAIL} {{ id }} "{PHONE}" }}'},
        "GRAPHQL_PARSE_FAILED",
    ),
    (
        "syntax-in-string",
        {"query": f'{{ {BY_EMAIL} {{ id }} }} "{PHONE} {EMAIL}'},
        "GRAPHQL_PARSE_FAILED",
    ),
    (
        "validation",
        {"query": f'query Lookup {{ {BY_EMAIL} {{ id phone(is: "{PHONE}") }} }}'},
        "GRAPHQL_VALIDATION_FAILED",
    ),
    (
        "literal-value",
        {
            "query": f'query Lookup {{ customer(by: {{id: "x"}}) {{ recommendations(n: "{EMAIL}") '
            "{ strategy } } }"
        },
        "GRAPHQL_VALIDATION_FAILED",
    ),
    (
        "variable-value",
        {
            "query": 'query Lookup($n: Int!) { customer(by: {id: "x"}) { recommendations(n: $n) '
            "{ strategy } } }",
            "variables": {"n": f"{EMAIL} {PHONE}"},
        },
        "BAD_USER_INPUT",
    ),
    (
        "variable-object",
        {
            "query": "query Lookup($i: IdentifierInput!) { customer(by: {identifier: $i}) { id } }",
            "variables": {"i": {"type": "email", "value": EMAIL, "phone": PHONE}},
        },
        "BAD_USER_INPUT",
    ),
    (
        "one-of",
        {
            "query": f'query Lookup {{ customer(by: {{id: "{PHONE}", identifier: {{type: '
            f'"email", value: "{EMAIL}"}}}}) {{ id }} }}'
        },
        "BAD_USER_INPUT",
    ),
    (
        "resolver-bad-input",
        {
            "query": f'query Lookup {{ customers(segment: "{PHONE}", first: 0, after: "{EMAIL}") '
            "{ totalCount } }"
        },
        "BAD_USER_INPUT",
    ),
    (
        "fault",
        {
            "query": 'query Lookup($v: String!) { customer(by: {identifier: {type: "email", '
            "value: $v}}) { id } }",
            "variables": {"v": EMAIL, "phone": PHONE},
        },
        "INTERNAL_SERVER_ERROR",
    ),
    (
        "fault-in-source",
        {
            "query": f'query Lookup {{ {BY_EMAIL} {{ id }} other: customer(by: {{id: "{PHONE}"}}) '
            "{ id } }"
        },
        "INTERNAL_SERVER_ERROR",
    ),
]

CLIENT_ERRORS = [f for f in FAILURES if f[2] != "INTERNAL_SERVER_ERROR"]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def everything_logged(record: logging.LogRecord) -> str:
    """Every text a log record carries: the formatted line (message, args, ``fields``,
    exception with traceback) and every attribute, extra ones included."""
    return JsonFormatter("gateway").format(record) + repr(vars(record))


def gateway_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # httpx is the test's own client here, logging the URL it calls; it is not the gateway.
    return [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]


@pytest.mark.parametrize(("name", "body", "code"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_a_failed_query_logs_no_source_no_variables(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    name: str,
    body: dict[str, Any],
    code: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.post("/graphql", json=body, headers=BEARER)
    assert response.status_code == 200, response.text
    errors = response.json()["errors"]
    assert code in {e["extensions"]["code"] for e in errors}, errors
    records = gateway_records(caplog)
    assert records, "the failure was not logged at all"
    for record in records:
        logged = everything_logged(record)
        for secret in SECRETS:
            assert secret not in logged, f"{name}: {secret!r} logged by {record.name}"
        assert "Lookup {" not in logged
        assert "GraphQL request:" not in logged


@pytest.mark.parametrize(("name", "body", "code"), CLIENT_ERRORS, ids=[f[0] for f in CLIENT_ERRORS])
async def test_client_errors_are_info_without_traceback(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    name: str,
    body: dict[str, Any],
    code: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post("/graphql", json=body, headers=BEARER)
    records = gateway_records(caplog)
    assert records
    assert {r.levelno for r in records} == {logging.INFO}
    assert all(r.exc_info is None and r.exc_text is None for r in records)
    fields = [getattr(r, "fields", {}) for r in records]
    assert code in {f.get("code") for f in fields}
    # The operation name is kept (it says which screen failed), unless the parse failed.
    if code != "GRAPHQL_PARSE_FAILED":
        assert {f.get("operation") for f in fields} == {"Lookup"}


async def test_a_fault_is_error_with_type_and_path_but_no_message(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = next(f[1] for f in FAILURES if f[0] == "fault")
    response = await client.post("/graphql", json=body, headers=BEARER)
    [error] = response.json()["errors"]
    assert error["message"] == "internal error"
    [record] = [r for r in gateway_records(caplog) if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR
    assert record.exc_info is None
    fields: dict[str, Any] = getattr(record, "fields", {})
    assert fields["code"] == "INTERNAL_SERVER_ERROR"
    assert fields["operation"] == "Lookup"
    assert fields["path"] == "customer"
    # The fault is in the gateway's own code (no service client is open in this test).
    assert fields["error_type"] == "AttributeError"
    assert "loaders.py" in fields["traceback"]
    # Not the exception's message: it could quote a value.
    assert "has no attribute" not in everything_logged(record)


@pytest.mark.parametrize(("name", "body", "code"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_request_errors_do_not_echo_values_to_the_client(
    client: httpx.AsyncClient, name: str, body: dict[str, Any], code: str
) -> None:
    response = await client.post("/graphql", json=body, headers=BEARER)
    errors = response.json()["errors"]
    assert errors
    for error in errors:
        for secret in SECRETS:
            assert secret not in error["message"], f"{name}: {error['message']!r}"


async def test_request_error_messages_still_say_what_is_wrong(client: httpx.AsyncClient) -> None:
    by_name = {f[0]: f[1] for f in FAILURES}
    cases = {
        "syntax": "Syntax Error: Expected Name, found String",
        "validation": "Cannot query field 'phone' on type 'Customer'.",
        "variable-value": "Variable '$n' has invalid value; expected type 'Int!'.",
        "variable-object": "Variable '$i' has invalid value; expected type 'IdentifierInput!'.",
        "literal-value": "Int cannot represent non-integer value.",
    }
    by_name["enum-variable"] = {
        "query": "mutation($kind: PrivacyRequestKind!) "
        '{ requestPrivacy(kind: $kind, customerId: "c") { id } }',
        "variables": {"kind": "FORGET"},
    }
    # An unknown enum value is a misspelt schema word, not data: it is shown.
    cases["enum-variable"] = (
        "Variable '$kind' has invalid value: "
        "Value 'FORGET' does not exist in 'PrivacyRequestKind' enum."
    )
    for name, expected in cases.items():
        response = await client.post("/graphql", json=by_name[name], headers=BEARER)
        messages = [e["message"] for e in response.json()["errors"]]
        assert any(m.startswith(expected) for m in messages), (name, messages)


async def test_an_unbounded_name_is_not_echoed_whole(client: httpx.AsyncClient) -> None:
    name = "f" * 20_000
    response = await client.post("/graphql", json={"query": f"{{ {name} }}"}, headers=BEARER)
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert len(error["message"]) <= 300
    assert error["message"].startswith("Cannot query field 'fff")


async def test_unauthenticated_and_oversize_requests_are_info(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post("/graphql", json={"query": f"{{ {BY_EMAIL} {{ id }} }}"})
    big = {"query": f"{{ {BY_EMAIL} {{ id }} }}" + " " * SETTINGS.graphql_max_bytes}
    await client.post("/graphql", json=big, headers=BEARER)
    records = gateway_records(caplog)
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    for record in records:
        assert EMAIL not in everything_logged(record)
