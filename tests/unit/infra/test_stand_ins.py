"""The loopback stand-ins and their kit: they import nothing from the services they stand in
for (so a wrong production value fails the tests), the Google stand-in holds Google's values
itself and refuses assertions that get them wrong, and the kit's call log keeps its indexes
and JSON lines."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import httpx
import pytest
from google.auth import crypt
from google.auth import jwt as google_jwt
from starlette.requests import Request

from infra.local.fake_google import (
    DevServiceAccount,
    FakeGoogleWallet,
    ensure_google_dev_service_account,
)
from infra.local.standin import CallLog, since_index

ROOT = Path(__file__).resolve().parents[3]
STAND_INS = ("infra/local/fake_apns.py", "infra/local/fake_google.py", "infra/local/standin.py")
# Google's published values, written out a third time: the stand-in must hold the same.
GOOGLE_SCOPE = "https://www.googleapis.com/auth/wallet_object.issuer"
GOOGLE_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CALLED_TOKEN_URL = "http://stand-in/token"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (``from x import y`` gives ``x`` and ``x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("name", STAND_INS)
def test_a_stand_in_imports_nothing_from_the_services_it_stands_in_for(name: str) -> None:
    services = sorted(m for m in imported_modules(ROOT / name) if m.startswith("services.wallet"))
    assert services == [], f"{name} imports {services}"


def _assertion(account: DevServiceAccount, **changes: object) -> str:
    now = int(time.time())
    claims = {
        "iss": account.client_email,
        "scope": GOOGLE_SCOPE,
        "aud": CALLED_TOKEN_URL,
        "iat": now,
        "exp": now + 3600,
        **changes,
    }
    # google.auth ships no type hints for these two calls.
    signer = crypt.RSASigner.from_string(account.private_key, key_id=account.private_key_id)  # type: ignore[no-untyped-call]
    token: bytes = google_jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
    return token.decode()


@pytest.fixture
def account(tmp_path: Path) -> DevServiceAccount:
    """The stand-in's dev service account, read the stand-in's way."""
    return DevServiceAccount.from_file(ensure_google_dev_service_account(tmp_path, "unused"))


async def _token_answer(account: DevServiceAccount, grant: str, assertion: str) -> httpx.Response:
    fake = FakeGoogleWallet(account)
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://stand-in") as http:
        return await http.post("/token", data={"grant_type": grant, "assertion": assertion})


async def test_the_google_stand_in_grants_googles_scope_and_grant(
    account: DevServiceAccount,
) -> None:
    answer = await _token_answer(account, GOOGLE_GRANT, _assertion(account))
    assert answer.status_code == 200
    assert answer.json()["token_type"] == "Bearer"


async def test_the_google_stand_in_refuses_a_wrong_scope(account: DevServiceAccount) -> None:
    wrong = _assertion(account, scope="https://www.googleapis.com/auth/wallet_object")
    answer = await _token_answer(account, GOOGLE_GRANT, wrong)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert GOOGLE_SCOPE in answer.json()["error_description"]


async def test_the_google_stand_in_refuses_a_wrong_grant_type(account: DevServiceAccount) -> None:
    answer = await _token_answer(account, "urn:ietf:params:oauth:grant-type:jwt", "x.y.z")
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_the_stand_in_reads_a_key_file_and_names_a_bad_one(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "authorized_user"}))
    with pytest.raises(ValueError, match="not a service account key"):
        DevServiceAccount.from_file(key)
    key.write_text(json.dumps({"type": "service_account", "client_email": "a"}))
    with pytest.raises(ValueError, match="lacks private_key_id, private_key"):
        DevServiceAccount.from_file(key)


def test_the_call_log_keeps_counting_after_a_clear_and_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    log: CallLog[dict[str, int]] = CallLog(dict, path)
    log.add(lambda index: {"index": index})
    log.add(lambda index: {"index": index})
    assert log.clear() == 2
    third = log.add(lambda index: {"index": index})
    assert (third, log.next_index, list(log)) == ({"index": 2}, 3, [{"index": 2}])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"index": 0}, {"index": 1}, {"index": 2}]


@pytest.mark.parametrize(("query", "since"), [(b"", 0), (b"since=4", 4), (b"since=four", None)])
def test_since_is_an_index_or_none(query: bytes, since: int | None) -> None:
    request = Request({"type": "http", "query_string": query, "headers": []})
    assert since_index(request) == since
