"""The PassKit web service's doors over real HTTP against a real SecantusDB: bodies are
read as a capped stream (413 before the rest arrives), odd JSON, parameters and headers are
400 or 401 naming the problem, never 500, and what phones log reaches the service log
without e-mails or phone numbers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import free_port
from services.platform.logs import JsonFormatter
from services.platform.mongo import Document
from services.wallet.applepass import PassSigner
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.http import HttpServer
from services.wallet.passes import WalletPasses
from services.wallet.store import WalletStore
from services.wallet.templates import PassKind
from services.wallet.webservice import PassKitWebService
from tests.support.kafka import unique

PASS_TYPE_ID = "pass.com.example.lodestar.doors"
DEVICE = "device0123456789abcdef"
# A hang guard for reads that must not wait for a body nobody sends; never a timing check.
HANG_GUARD_S = 60


@pytest.fixture(scope="module")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> SigningFiles:
    return ensure_dev_certificates(tmp_path_factory.mktemp("certs"), PASS_TYPE_ID, "TEAMIT0002")


@dataclass
class Service:
    passes: WalletPasses
    port: int
    http: httpx.AsyncClient
    serial: str
    token: str

    @property
    def registration(self) -> str:
        return f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}/{self.serial}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"ApplePass {self.token}"}


@pytest.fixture
async def service(
    client: AsyncIOMotorClient[Document], signing_files: SigningFiles
) -> AsyncIterator[Service]:
    store = WalletStore(client[unique("wallet")])
    await store.ensure_indexes()
    signer = PassSigner.from_files(
        signing_files.certificate, signing_files.key, signing_files.intermediate
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    passes = WalletPasses(store, signer, url)
    issued = await passes.issue("c-doors", PassKind.STORE_CARD, "")
    server = HttpServer(PassKitWebService(passes).app, "127.0.0.1", port)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            yield Service(passes, port, http, issued["_id"], issued["authentication_token"])
    finally:
        await server.stop()


async def raw_exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request head and part of a body, keep the connection open, and return what the
    server answers (status line, headers and body) without sending anything more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(HANG_GUARD_S):
            status_and_headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in status_and_headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status_and_headers + await reader.readexactly(length)
    finally:
        writer.close()


def head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def test_a_declared_oversized_body_is_413_before_it_is_sent(service: Service) -> None:
    # 30 MB announced, 10 bytes sent: the answer comes without waiting for the rest.
    for path, extra in (
        ("/v1/log", ()),
        (service.registration, ("Authorization: " + service.auth["Authorization"],)),
    ):
        answer = await raw_exchange(
            service.port,
            head(path, "Content-Type: application/json", "Content-Length: 30000000", *extra),
            b'{"logs": [',
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"65536 bytes" in answer
    assert await service.passes.store.registrations_of(service.serial) == []


async def test_a_streamed_oversized_body_is_413_once_the_cap_is_passed(service: Service) -> None:
    # Chunked, no length: 70 KB arrive and the stream stays open; the service stops reading.
    chunk = b"x" * 10_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(7))
    for path, extra in (
        ("/v1/log", ()),
        (service.registration, ("Authorization: " + service.auth["Authorization"],)),
    ):
        answer = await raw_exchange(
            service.port, head(path, "Transfer-Encoding: chunked", *extra), chunks
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"connection: close" in answer.lower()
    assert await service.passes.store.registrations_of(service.serial) == []


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


async def test_odd_json_is_400_naming_the_problem(service: Service) -> None:
    deep_object = '{"a":' * 10_000 + "1" + "}" * 10_000
    log_cases: list[tuple[bytes, str]] = [
        (nested(20_000).encode(), "nested"),
        (deep_object.encode(), "nested"),
        (('{"logs": ' + nested(5_000, '"x"') + "}").encode(), "nested"),
        (b"[]", "JSON object"),
        (b'"logs"', "JSON object"),
        (b"null", "JSON object"),
        (b"7", "JSON object"),
        (b"", "JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"logs": [1, 2]}', "logs"),
        (b'{"logs": {"a": "b"}}', "logs"),
        (b'{"logs": ["ok"], "n": ' + b"9" * 5_000 + b"}", "number"),
        (b'{"logs": ["a"]} trailing', "JSON"),
    ]
    for body, named in log_cases:
        response = await service.http.post("/v1/log", content=body)
        assert response.status_code == 400, (body[:40], response.text)
        assert named in response.json()["error"], (body[:40], response.text)
        assert len(response.text) < 300
    push_cases: list[tuple[bytes, str]] = [
        (('{"pushToken": ' + nested(20_000, '"t"') + "}").encode(), "nested"),
        (nested(20_000).encode(), "nested"),
        (b'{"pushToken": "\\ud800"}', "pushToken"),
        (b'{"pushToken": ["abc"]}', "pushToken"),
        (b'{"pushToken": 123}', "pushToken"),
        (b'{"pushToken": null}', "pushToken"),
        (b'{"pushToken": "' + b"a" * 257 + b'"}', "pushToken"),
        (b'["pushToken", "abc"]', "JSON object"),
        (b'{"pushToken": "abc", "n": ' + b"1" * 5_000 + b"}", "number"),
        (b"\xc3\x28", "UTF-8"),
    ]
    for body, named in push_cases:
        response = await service.http.post(service.registration, content=body, headers=service.auth)
        assert response.status_code == 400, (body[:40], response.text)
        assert named in response.json()["error"], (body[:40], response.text)
    assert await service.passes.store.registrations_of(service.serial) == []
    # A lone surrogate in a device log is a valid JSON string and is logged, not a crash.
    logged = await service.http.post("/v1/log", content=b'{"logs": ["bad \\ud800 pass"]}')
    assert logged.status_code == 200
    registered = await service.http.post(
        service.registration, json={"pushToken": "abc"}, headers=service.auth
    )
    assert registered.status_code == 201


@pytest.mark.parametrize(
    "tag",
    ["²", "١٢", "-1", "+1", " 1", "1.0", "0x10", "9223372036854775808", "9" * 5_000, ""],
)
async def test_passes_updated_since_is_ascii_digits_within_int64(
    service: Service, tag: str
) -> None:
    response = await service.http.get(
        f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}",
        params={"passesUpdatedSince": tag},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "passesUpdatedSince" in error
    assert tag not in error or not tag


async def test_the_largest_tag_is_accepted(service: Service) -> None:
    response = await service.http.get(
        f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}",
        params={"passesUpdatedSince": str(2**63 - 1)},
    )
    assert response.status_code == 204


async def test_path_parameters_are_bounded(service: Service) -> None:
    long_type = "pass." + "a" * 300
    cases = [
        (f"/v1/devices/{DEVICE}/registrations/{long_type}", "passTypeIdentifier"),
        (f"/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}.%0A", "passTypeIdentifier"),
        (f"/v1/devices/{DEVICE}%0A/registrations/{PASS_TYPE_ID}", "deviceLibraryIdentifier"),
        (f"/v1/devices/{'d' * 129}/registrations/{PASS_TYPE_ID}", "deviceLibraryIdentifier"),
        (f"/v1/devices/d%C3%A9vice/registrations/{PASS_TYPE_ID}", "deviceLibraryIdentifier"),
        (f"/v1/passes/{long_type}/{service.serial}", "passTypeIdentifier"),
        (f"/v1/passes/{PASS_TYPE_ID}/{'s' * 129}", "serialNumber"),
        (f"/v1/passes/{PASS_TYPE_ID}/{service.serial}%0A", "serialNumber"),
    ]
    for path, named in cases:
        response = await service.http.get(path, headers=service.auth)
        assert response.status_code == 400, (path[:80], response.text)
        error = response.json()["error"]
        assert named in error
        assert "aaaa" not in error
    for method in ("POST", "DELETE"):
        response = await service.http.request(
            method,
            f"/v1/devices/{DEVICE}/registrations/{long_type}/{service.serial}",
            json={"pushToken": "abc"},
            headers=service.auth,
        )
        assert response.status_code == 400
        assert "passTypeIdentifier" in response.json()["error"]


async def test_odd_headers_are_answered_never_500(service: Service) -> None:
    path = f"/v1/passes/{PASS_TYPE_ID}/{service.serial}"
    for authorization in (
        "ApplePass " + "t" * 8_000,
        "ApplePass " + service.token + "x",
        "ApplePass",
        "ApplePass \tx",
        "Bearer " + service.token,
    ):
        response = await service.http.get(path, headers={"Authorization": authorization})
        assert response.status_code == 401, authorization[:20]
    # A megabyte of header is refused by the HTTP server itself, as a client error.
    huge = await service.http.get(path, headers={"Authorization": "ApplePass " + "t" * 1_000_000})
    assert 400 <= huge.status_code < 500
    # Non-ASCII header bytes (read as Latin-1) do not match and do not crash.
    answer = await raw_exchange(
        service.port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ApplePass ".encode()
        + b"\xff\xfe"
        + b"\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    for since in ("Jan 31 10:00:00 99999999999", "x" * 8_000, "Mon, 99 Foo 2024 99:99:99 GMT"):
        fetched = await service.http.get(path, headers={**service.auth, "If-Modified-Since": since})
        assert fetched.status_code == 200, since[:40]


async def test_device_logs_reach_the_log_without_pii(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        "[2024-05-01 10:00:00 +0000] Register task for jane.doe@example.com failed: "
        "call me on +34 612 345 678 or 612345678",
        "Web service error for pass.com.example (https://wallet.example.com/v1?t=abc): "
        "Unexpected response code 401",
        "token " + "Ab1" * 20,
        "x" * 5_000,
    ]
    caplog.set_level(logging.DEBUG, logger="services.wallet.webservice")
    response = await service.http.post("/v1/log", json={"logs": messages})
    assert response.status_code == 200
    records = [r for r in caplog.records if r.name == "services.wallet.webservice"]
    assert records
    formatter = JsonFormatter("wallet")
    written = "\n".join(formatter.format(r) for r in records)
    for secret in (
        "jane.doe",
        "example.com/v1",
        "612 345 678",
        "612345678",
        "+34",
        "Ab1Ab1Ab1",
        "x" * 300,
    ):
        assert secret not in written, secret
    entries = [json.loads(line) for line in written.splitlines()]
    assert all(e["level"] in {"INFO", "WARNING"} for e in entries)
    # What an operator needs stays: how many, and what failed.
    summary: dict[str, Any] = entries[0]
    assert summary["messages"] == 4
    assert "Register task" in written
    assert "failed" in written
    assert "401" in written
