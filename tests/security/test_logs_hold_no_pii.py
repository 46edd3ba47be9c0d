"""No log of the run holds personal data.

Runs after every other test of the session (``run_last``), so it scans the logs of the whole
e2e and security run: first it sends its own personal data through every door (ingest,
GraphQL with failing queries and variables, PassKit device logs, gRPC with bad input), then
it looks in every process's log for any e-mail address, every phone number and name the test
suites send, and its own.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import grpc
import pytest

from infra.local.stack import Stack
from lodestar.v1 import common_pb2, identity_pb2, identity_pb2_grpc
from tests.security.oracle import drained
from tests.support.kafka import unique
from tests.support.platform import Platform

pytestmark = [pytest.mark.e2e, pytest.mark.run_last]

TESTS = Path(__file__).resolve().parents[1]
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE_LITERAL = re.compile(r"[\"'](\+[0-9][0-9 ()./-]{8,}[0-9])[\"']")
NAME_LITERAL = re.compile(r"[\"'](?:firstName|lastName|first_name|last_name)[\"']: [\"']([^\"']+)")
OWN_NAME = "Zebulon Quixote-Marchetti"
OWN_PHONE = "+14155550177"


def sent_phones_and_names() -> set[str]:
    """Every phone number and first/last name written in the e2e, security and integration
    tests, as sent and (phones) in E.164."""
    found = {OWN_NAME, OWN_PHONE}
    for folder in ("e2e", "security", "integration"):
        for path in (TESTS / folder).glob("*.py"):
            text = path.read_text()
            for phone in PHONE_LITERAL.findall(text):
                found |= {phone, "+" + re.sub(r"\D", "", phone)}
            found |= set(NAME_LITERAL.findall(text))
    return found


def pii_in_logs(log_dir: Path, needles: set[str]) -> list[str]:
    """``file: what`` for each e-mail address, or needle, found in a log."""
    # Whole words only: the name "Ada" is not in "metadata" or "Adapter".
    patterns = {n: re.compile(rf"(?<![A-Za-z]){re.escape(n)}(?![A-Za-z])") for n in needles}
    found = []
    for path in sorted(log_dir.glob("*.log")):
        text = path.read_text(errors="replace")
        found += [f"{path.name}: e-mail {m}" for m in sorted(set(EMAIL.findall(text)))]
        found += [f"{path.name}: {n}" for n, p in sorted(patterns.items()) if p.search(text)]
    return found


async def send_pii_through_every_door(platform: Platform, stack: Stack) -> None:
    """Personal data in good and bad requests of every kind."""
    user_id = unique("pii")
    email = f"{user_id}@pii-scan.example"
    first, last = OWN_NAME.split(" ", 1)
    traits = {"email": email, "phone": OWN_PHONE, "firstName": first, "lastName": last}
    await platform.known_customer(user_id, **traits)
    await platform.send("/v1/track", {"userId": user_id, "event": "Viewed", "properties": traits})
    # Refused ingest calls carrying the same data.
    await platform.send("/v1/identify", {"userId": user_id, "traits": traits, "timestamp": "x"})
    await platform.send("/v1/track", {"userId": user_id, "properties": traits})
    # Failing GraphQL: syntax, validation, bad input, with PII in source and variables.
    await platform.graphql(
        f'{{ customer(by: {{identifier: {{type: "email", value: "{email}"}}}}) {{ '
    )
    await platform.graphql(f'{{ customer(by: {{id: "{OWN_PHONE}"}}) {{ nope }} }} # {OWN_NAME}')
    await platform.graphql(
        'query($v: String!) { customer(by: {identifier: {type: "phone", value: $v}}) { id } }',
        {"v": f"{OWN_PHONE} {OWN_NAME} not a phone"},
    )
    await platform.graphql(
        "query($v: Int!) { customer(by: {id: $v}) { id } }", {"v": f"{email} {OWN_NAME}"}
    )
    # A device's log lines, which Apple sends unauthenticated.
    await platform.client.post(
        f"{stack.passkit_url}/v1/log",
        json={"logs": [f"failed for {email} {OWN_PHONE} {OWN_NAME}"]},
    )
    # gRPC with bad identifiers.
    async with stack.grpc_channel("identity") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        for type_, value in (("phone", f"{OWN_PHONE}x{OWN_NAME}"), ("email", f"{email}@@")):
            identifier = common_pb2.Identifier(type=type_, value=value)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Lookup(identity_pb2.LookupRequest(identifier=identifier))


async def test_no_log_holds_an_email_phone_or_name(platform: Platform, stack: Stack) -> None:
    await send_pii_through_every_door(platform, stack)
    await drained(stack)
    needles = sent_phones_and_names()
    # The scan can see: the data was sent, and the logs are there and written.
    logs = list(stack.log_dir.glob("*.log"))
    assert {p.stem for p in logs} >= {"gateway", "identity", "profile", "wallet"}
    assert all(p.stat().st_size > 0 for p in logs if p.stem == "gateway")
    assert pii_in_logs(stack.log_dir, needles) == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    (tmp_path / "svc.log").write_text(
        '{"msg": "x", "email": "ada@example.com"}\n{"msg": "call +14155550177"}\n'
        '{"msg": "hello Zebulon Quixote-Marchetti"}\n{"msg": "metadata Adapter"}\n'
    )
    (tmp_path / "clean.log").write_text('{"msg": "metadata of Adapter 42"}\n')
    found = pii_in_logs(tmp_path, {OWN_PHONE, OWN_NAME, "Ada"})
    assert found == [
        "svc.log: e-mail ada@example.com",
        f"svc.log: {OWN_PHONE}",
        f"svc.log: {OWN_NAME}",
    ]
