"""The wallet's APNs client against the loopback APNs stand-in over TLS + HTTP/2 on 127.0.0.1:
delivery and what the stand-in saw, one connection for many pushes, refused credentials and
topics, 410, retries on 429 and 500, a refreshed provider token, the stand-in's own checks and
control endpoints, and the stand-in as a process stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from infra.local.devapns import DEV_LABEL, ApnsDevFiles, ensure_apns_dev_files
from infra.local.fake_apns import FakeApns
from infra.local.servers import free_port
from services.wallet.clients.apns import ApnsClient, ApnsCredentials, provider_token
from services.wallet.pushes import PushOutcome

ROOT = Path(__file__).resolve().parents[2]
TEAM_ID = "TEAMIT0001"
KEY_ID = "KEYIT00001"
TOPIC = "pass.com.example.lodestar.it"
DEVICE_TOKEN = "c0ffee" * 10 + "abcd"


@pytest.fixture(scope="module")
def dev_files(tmp_path_factory: pytest.TempPathFactory) -> ApnsDevFiles:
    return ensure_apns_dev_files(tmp_path_factory.mktemp("apns"), TEAM_ID, KEY_ID)


@pytest.fixture
async def fake(dev_files: ApnsDevFiles, tmp_path: Path) -> AsyncIterator[FakeApns]:
    server = FakeApns.from_dev_files(dev_files, topics=[TOPIC], log_path=tmp_path / "push.log")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeApns, dev_files: ApnsDevFiles) -> AsyncIterator[ApnsClient]:
    """The wallet's client with the dev auth key, trusting the dev CA; 4 attempts."""
    credentials = ApnsCredentials.from_file(dev_files.auth_key, TEAM_ID, KEY_ID)
    async with ApnsClient(
        fake.url, credentials, ca_file=dev_files.ca_certificate, backoff_s=0.01
    ) as apns:
        yield apns


def _http(files: ApnsDevFiles, *, http2: bool = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http2=http2, verify=ssl.create_default_context(cafile=str(files.ca_certificate))
    )


async def test_push_is_delivered_and_recorded(
    fake: FakeApns, client: ApnsClient, tmp_path: Path
) -> None:
    result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.attempts) == (PushOutcome.DELIVERED, 200, 1)
    (push,) = fake.received
    assert (push.device_token, push.topic, push.http_version) == (DEVICE_TOKEN, TOPIC, "2")
    assert (push.push_type, push.priority, push.payload) == ("background", "5", {})
    assert (push.status, push.apns_id) == (200, result.apns_id)
    assert push.jwt_kid == KEY_ID
    assert push.jwt_iat is not None
    assert abs(push.jwt_iat - time.time()) < 60
    (line,) = (tmp_path / "push.log").read_text().splitlines()
    assert json.loads(line)["device_token"] == DEVICE_TOKEN


async def test_concurrent_pushes_share_one_connection_and_one_token(
    fake: FakeApns, client: ApnsClient
) -> None:
    targets = [(f"{i:064x}", TOPIC) for i in range(1, 201)]
    results = await client.push_many(targets)
    assert {r.outcome for r in results} == {PushOutcome.DELIVERED}
    received = fake.received
    assert sorted(p.device_token for p in received) == sorted(t for t, _ in targets)
    assert len({p.connection for p in received}) == 1
    assert len({p.jwt_fingerprint for p in received}) == 1
    assert {p.http_version for p in received} == {"2"}


async def test_a_key_apns_does_not_know_is_rejected(
    fake: FakeApns, tmp_path: Path, dev_files: ApnsDevFiles
) -> None:
    # Same key id and team, another key: the signature does not verify.
    stranger = ensure_apns_dev_files(tmp_path / "other", TEAM_ID, KEY_ID)
    credentials = ApnsCredentials.from_file(stranger.auth_key, TEAM_ID, KEY_ID)
    async with ApnsClient(fake.url, credentials, ca_file=dev_files.ca_certificate) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.REJECTED,
        403,
        "InvalidProviderToken",
        1,
    )
    assert [p.status for p in fake.received] == [403]


async def test_another_team_is_rejected(fake: FakeApns, dev_files: ApnsDevFiles) -> None:
    credentials = ApnsCredentials.from_file(dev_files.auth_key, "OTHERTEAM1", KEY_ID)
    async with ApnsClient(fake.url, credentials, ca_file=dev_files.ca_certificate) as client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.reason) == (PushOutcome.REJECTED, "InvalidProviderToken")


async def test_a_topic_not_allowed_is_rejected(fake: FakeApns, client: ApnsClient) -> None:
    result = await client.push(DEVICE_TOKEN, "pass.com.example.someone.else")
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.REJECTED,
        400,
        "TopicDisallowed",
        1,
    )


async def test_unregistered_token_answers_410(fake: FakeApns, client: ApnsClient) -> None:
    fake.stand_in.unregister(DEVICE_TOKEN)
    before_ms = time.time() * 1000
    result = await client.push(DEVICE_TOKEN, TOPIC)
    again = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.reason) == (
        PushOutcome.UNREGISTERED,
        410,
        "Unregistered",
    )
    assert result.timestamp_ms is not None
    assert result.timestamp_ms >= before_ms - 1000
    assert again.outcome is PushOutcome.UNREGISTERED


async def test_429_then_200_is_delivered_on_the_second_attempt(
    fake: FakeApns, client: ApnsClient, dev_files: ApnsDevFiles
) -> None:
    async with _http(dev_files) as http:
        scripted = await http.post(f"{fake.url}/fake/responses", json={"status": 429, "count": 1})
    assert scripted.status_code == 201
    result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.attempts) == (PushOutcome.DELIVERED, 2)
    assert [(p.status, p.reason) for p in fake.received] == [(429, "TooManyRequests"), (200, "")]


async def test_500_until_attempts_run_out_fails(fake: FakeApns, client: ApnsClient) -> None:
    fake.stand_in.script(500, count=100)
    result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.reason, result.attempts) == (
        PushOutcome.FAILED,
        500,
        "InternalServerError",
        4,
    )
    assert [p.status for p in fake.received] == [500] * 4


async def test_scripted_answers_can_target_one_device(fake: FakeApns, client: ApnsClient) -> None:
    other = "ab" * 32
    fake.stand_in.script(410, count=1, device_token=other)
    first = await client.push(DEVICE_TOKEN, TOPIC)
    second = await client.push(other, TOPIC)
    third = await client.push(other, TOPIC)
    assert [r.outcome for r in (first, second, third)] == [
        PushOutcome.DELIVERED,
        PushOutcome.UNREGISTERED,
        PushOutcome.DELIVERED,
    ]


async def test_expired_provider_token_is_refreshed_and_delivered(
    fake: FakeApns, client: ApnsClient
) -> None:
    fake.stand_in.script(403, "ExpiredProviderToken", count=1)
    result = await client.push(DEVICE_TOKEN, TOPIC)
    later = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.attempts) == (PushOutcome.DELIVERED, 2)
    assert later.attempts == 1
    stale, fresh, reused = fake.received
    assert (stale.status, stale.reason) == (403, "ExpiredProviderToken")
    assert stale.jwt_fingerprint != fresh.jwt_fingerprint == reused.jwt_fingerprint


async def test_unreachable_apns_fails_after_max_attempts(dev_files: ApnsDevFiles) -> None:
    credentials = ApnsCredentials.from_file(dev_files.auth_key, TEAM_ID, KEY_ID)
    url = f"https://127.0.0.1:{free_port()}"
    client = ApnsClient(
        url, credentials, ca_file=dev_files.ca_certificate, max_attempts=3, backoff_s=0.01
    )
    async with client:
        result = await client.push(DEVICE_TOKEN, TOPIC)
    assert (result.outcome, result.status, result.attempts) == (PushOutcome.FAILED, None, 3)
    assert "ConnectError" in result.reason


def _headers(files: ApnsDevFiles, iat: float | None = None) -> dict[str, str]:
    credentials = ApnsCredentials.from_file(files.auth_key, files.team_id, files.key_id)
    token = provider_token(credentials, int(time.time() if iat is None else iat))
    return {
        "authorization": f"bearer {token}",
        "apns-topic": TOPIC,
        "apns-push-type": "background",
        "apns-priority": "5",
    }


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"authorization": None}, 403, "MissingProviderToken"),
        ({"authorization": "bearer not.a.jwt"}, 403, "InvalidProviderToken"),
        ({"iat": -2 * 3600}, 403, "ExpiredProviderToken"),
        ({"apns-topic": None}, 400, "MissingTopic"),
        ({"token": "not-hex-at-all"}, 400, "BadDeviceToken"),
        ({"apns-priority": "10"}, 400, "BadPriority"),
        ({"apns-push-type": "nonsense"}, 400, "InvalidPushType"),
        ({"body": b""}, 400, "PayloadEmpty"),
        ({"body": b"not json"}, 400, "BadPayload"),
        ({"body": b"[]"}, 400, "BadPayload"),
        ({"body": b'{"x": "' + b"y" * 4100 + b'"}'}, 413, "PayloadTooLarge"),
        ({"http2": False}, 400, "HTTP2Required"),
    ],
)
async def test_stand_in_refuses_what_apns_refuses(
    fake: FakeApns,
    dev_files: ApnsDevFiles,
    change: dict[str, object],
    status: int,
    reason: str,
) -> None:
    headers = _headers(dev_files, time.time() + float(str(change.get("iat", 0))))
    for name in ("authorization", "apns-topic", "apns-priority", "apns-push-type"):
        if name in change:
            value = change[name]
            if value is None:
                del headers[name]
            else:
                headers[name] = str(value)
    token = str(change.get("token", DEVICE_TOKEN))
    body = change.get("body", b"{}")
    assert isinstance(body, bytes)
    async with _http(dev_files, http2=change.get("http2") is not False) as http:
        response = await http.post(f"{fake.url}/3/device/{token}", headers=headers, content=body)
    assert (response.status_code, response.json()) == (status, {"reason": reason})
    assert response.headers["apns-id"]
    (push,) = fake.received
    assert (push.status, push.reason) == (status, reason)


async def test_control_endpoints_list_filter_and_clear(
    fake: FakeApns, client: ApnsClient, dev_files: ApnsDevFiles
) -> None:
    other = "ab" * 32
    await client.push_many([(DEVICE_TOKEN, TOPIC), (other, TOPIC), (other, TOPIC)])
    async with _http(dev_files, http2=False) as http:
        listing = (await http.get(f"{fake.url}/fake/pushes")).json()
        mine = (await http.get(f"{fake.url}/fake/pushes?device_token={other}")).json()
        since = (await http.get(f"{fake.url}/fake/pushes?since=2")).json()
        assert (await http.delete(f"{fake.url}/fake/pushes")).json()["cleared"] == 3
        empty = (await http.get(f"{fake.url}/fake/pushes")).json()
        bad = await http.post(f"{fake.url}/fake/responses", json={"status": "soon"})
        unregistered = await http.post(
            f"{fake.url}/fake/unregistered", json={"device_token": other}
        )
    assert listing["stand_in"] is True
    assert "not Apple" in listing["service"]
    assert (listing["count"], listing["next_index"]) == (3, 3)
    assert [p["device_token"] for p in mine["pushes"]] == [other, other]
    assert [p["index"] for p in since["pushes"]] == [2]
    assert (empty["count"], empty["next_index"]) == (0, 3)
    assert bad.status_code == 400
    assert unregistered.status_code == 200
    assert (await client.push(other, TOPIC)).outcome is PushOutcome.UNREGISTERED


def test_dev_files_are_made_once_and_labelled(tmp_path: Path) -> None:
    files = ensure_apns_dev_files(tmp_path, TEAM_ID, KEY_ID)
    contents = [p.read_bytes() for p in (files.ca_certificate, files.auth_key)]
    again = ensure_apns_dev_files(tmp_path, TEAM_ID, KEY_ID)
    assert again == files
    assert [p.read_bytes() for p in (files.ca_certificate, files.auth_key)] == contents
    assert files.auth_key.name == f"AuthKey_{KEY_ID}.p8"
    assert files.auth_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert files.auth_key.stat().st_mode & 0o077 == 0
    assert files.server_key.stat().st_mode & 0o077 == 0
    assert DEV_LABEL in (tmp_path / "README.txt").read_text()


async def _first_answer(
    http: httpx.AsyncClient, url: str, process: asyncio.subprocess.Process
) -> httpx.Response:
    """The first answer from ``url`` once the process listens (15 s at most)."""
    async with asyncio.timeout(15):
        while True:
            assert process.returncode is None, "the stand-in exited while starting"
            try:
                return await http.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.05)


async def test_stand_in_runs_as_a_process_until_sigterm(
    dev_files: ApnsDevFiles, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "pushes.jsonl"
    command = [
        sys.executable,
        "-m",
        "infra.local.fake_apns",
        *("--port", str(port), "--cert", str(dev_files.server_certificate)),
        *("--key", str(dev_files.server_key), "--auth-key-public", str(dev_files.auth_key_public)),
        *("--key-id", KEY_ID, "--team-id", TEAM_ID, "--topic", TOPIC, "--log", str(log)),
    ]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    url = f"https://127.0.0.1:{port}"
    try:
        async with _http(dev_files) as http:
            ready = await _first_answer(http, f"{url}/fake/pushes", process)
            assert ready.json()["stand_in"] is True
            credentials = ApnsCredentials.from_file(dev_files.auth_key, TEAM_ID, KEY_ID)
            async with ApnsClient(url, credentials, ca_file=dev_files.ca_certificate) as client:
                result = await client.push(DEVICE_TOKEN, TOPIC)
                listing = (await http.get(f"{url}/fake/pushes")).json()
                assert result.outcome is PushOutcome.DELIVERED
                assert [p["device_token"] for p in listing["pushes"]] == [DEVICE_TOKEN]
                # The client's idle connection stays open: SIGTERM must not wait for it.
                process.send_signal(signal.SIGTERM)
                returncode = await asyncio.wait_for(process.wait(), timeout=5)
        assert process.stderr is not None
        stderr = (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert returncode == 0
    assert "stand-in" in stderr
    assert json.loads(log.read_text().splitlines()[0])["status"] == 200
