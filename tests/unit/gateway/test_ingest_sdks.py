"""The ingest door as Segment's own SDKs use it: the browser's short routes, text/plain bodies
and body write key, gzip bodies, partial batches, CORS, client addresses and rate limits.

The app runs in process over a bus that records what it would produce.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from gateway.ingest import IngestApi
from gateway.settings import GatewaySettings
from lodestar.v1 import events_pb2
from services.platform.bus import Bus, BusConfig

WRITE_KEY = "wk_sdk_test_12345"
SETTINGS = GatewaySettings(write_key=WRITE_KEY)
TEXT = {"Content-Type": "text/plain"}
SHORT_ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "t": ("track", {"userId": "u-1", "event": "Viewed"}),
    "i": ("identify", {"userId": "u-1", "traits": {"plan": "gold"}}),
    "p": ("page", {"anonymousId": "a-1", "name": "Home"}),
    "s": ("screen", {"anonymousId": "a-1", "name": "Cart"}),
    "g": ("group", {"userId": "u-1", "groupId": "acme"}),
    "a": ("alias", {"userId": "u-1", "previousId": "a-1"}),
}


def basic(username: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic(WRITE_KEY)


class RecordingBus(Bus):
    """A bus that keeps what it is asked to produce instead of talking to Kafka."""

    def __init__(self) -> None:
        super().__init__(BusConfig(bootstrap_servers="unused:9092", client_id="test"))
        self.produced: list[tuple[str, str | bytes | None, Message]] = []

    async def publish_many(
        self, records: Sequence[tuple[str, str | bytes | None, Message]]
    ) -> None:
        self.produced.extend(records)

    def events(self) -> list[events_pb2.Event]:
        """What was produced, as events."""
        found = []
        for _, _, message in self.produced:
            assert isinstance(message, events_pb2.Event)
            found.append(message)
        return found


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


def client_of(api: IngestApi) -> httpx.AsyncClient:
    app = Starlette(routes=api.routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def ingest(bus: RecordingBus) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(IngestApi(SETTINGS, bus)) as http:
        yield http


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["message"]
    return error


def as_text(body: Any) -> bytes:
    return json.dumps(body).encode()


# 1. The browser SDK: short routes, text/plain, writeKey in the body.


@pytest.mark.parametrize("route", sorted(SHORT_ROUTES))
async def test_short_routes_take_text_plain_with_the_write_key_in_the_body(
    ingest: httpx.AsyncClient, bus: RecordingBus, route: str
) -> None:
    kind, call = SHORT_ROUTES[route]
    body = {**call, "writeKey": WRITE_KEY, "messageId": f"m-{route}"}
    response = await ingest.post(f"/v1/{route}", content=as_text(body), headers=TEXT)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    (event,) = bus.events()
    assert event.type == events_pb2.EventType.Value(f"EVENT_TYPE_{kind.upper()}")
    assert event.message_id == f"m-{route}"


async def test_the_body_write_key_never_reaches_the_event(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    body = {"userId": "u-1", "event": "Viewed", "writeKey": WRITE_KEY, "context": {"a": 1}}
    assert (await ingest.post("/v1/t", content=as_text(body), headers=TEXT)).status_code == 200
    (event,) = bus.events()
    assert WRITE_KEY.encode() not in event.SerializeToString()
    assert "writeKey" not in json.dumps(MessageToDict(event))


async def test_short_batch_route_takes_the_browser_batch(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    # analytics-next's batching dispatcher: writeKey at the top and in every item.
    items = [
        {"type": "track", "userId": "u-1", "event": "A", "writeKey": WRITE_KEY},
        {"type": "page", "anonymousId": "a-1", "name": "Home", "writeKey": WRITE_KEY},
    ]
    body = {"writeKey": WRITE_KEY, "batch": items, "sentAt": "2026-01-01T00:00:00Z"}
    response = await ingest.post("/v1/b", content=as_text(body), headers=TEXT)
    assert response.status_code == 200, response.text
    events = bus.events()
    assert [e.name for e in events] == ["A", "Home"]
    assert all(WRITE_KEY.encode() not in e.SerializeToString() for e in events)


async def test_mobile_batch_with_basic_auth_on_the_short_route(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    body = {"batch": [{"type": "screen", "userId": "u-1", "name": "Cart"}]}
    response = await ingest.post("/v1/b", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert len(bus.produced) == 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"userId": "u", "event": "e", "writeKey": "wk_wrong_12345"}, TEXT),
        ({"userId": "u", "event": "e", "writeKey": 12345678}, TEXT),
        ({"userId": "u", "event": "e"}, TEXT),
        # A wrong Basic key decides, whatever the body says.
        ({"userId": "u", "event": "e", "writeKey": WRITE_KEY}, basic("wk_wrong_12345")),
    ],
)
async def test_a_wrong_or_missing_body_key_is_401(
    ingest: httpx.AsyncClient, bus: RecordingBus, body: Any, headers: dict[str, str]
) -> None:
    response = await ingest.post("/v1/t", content=as_text(body), headers=headers)
    assert "writeKey" in error_of(response, 401, "unauthorized")["message"]
    assert bus.produced == []


@pytest.mark.parametrize("body", [b"{not json", b"[1]", b'"x"', b""])
async def test_without_a_readable_key_the_body_is_never_judged(
    ingest: httpx.AsyncClient, body: bytes
) -> None:
    # No key: the answer is 401, not a 400 describing the body.
    error_of(await ingest.post("/v1/t", content=body, headers=TEXT), 401, "unauthorized")


async def test_an_invalid_call_with_a_wrong_body_key_is_401_not_400(
    ingest: httpx.AsyncClient,
) -> None:
    body = {"event": "no user", "writeKey": "wk_wrong_12345"}
    error_of(await ingest.post("/v1/t", content=as_text(body), headers=TEXT), 401, "unauthorized")


# 3. Content-Encoding: gzip (analytics-python with gzip=True, the mobile SDKs).


def gzipped(body: Any) -> bytes:
    return gzip.compress(body if isinstance(body, bytes) else as_text(body))


GZIP = {"Content-Encoding": "gzip", "Content-Type": "application/json"}


async def test_a_gzipped_batch_with_basic_auth(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    batch = {"batch": [{"type": "track", "userId": f"u-{n}", "event": "E"} for n in range(3)]}
    response = await ingest.post("/v1/batch", content=gzipped(batch), headers={**AUTH, **GZIP})
    assert response.status_code == 200, response.text
    assert [key for _, key, _ in bus.produced] == ["u-0", "u-1", "u-2"]


async def test_a_gzipped_browser_call_with_the_body_key(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    body = {"userId": "u-1", "event": "Viewed", "writeKey": WRITE_KEY}
    headers = {"Content-Encoding": "gzip", **TEXT}
    response = await ingest.post("/v1/t", content=gzipped(body), headers=headers)
    assert response.status_code == 200, response.text
    assert len(bus.produced) == 1


async def test_the_size_limit_holds_for_the_inflated_body(ingest: httpx.AsyncClient) -> None:
    body = {"userId": "u-1", "event": "E", "properties": {"blob": "x" * (40 * 1024)}}
    compressed = gzipped(body)
    assert len(compressed) < SETTINGS.max_event_bytes
    response = await ingest.post("/v1/track", content=compressed, headers={**AUTH, **GZIP})
    error = error_of(response, 400, "payload_too_large")
    assert f"inflates to more than {SETTINGS.max_event_bytes} bytes" in error["message"]


async def test_a_zip_bomb_is_refused_without_inflating_it(
    ingest: httpx.AsyncClient, bus: RecordingBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    inflated: list[int] = []
    real = zlib.decompressobj

    class Counting:
        """A decompressor that notes how much it produced."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.inner = real(*args, **kwargs)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self.inner.decompress(data, max_length)
            inflated.append(len(out))
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")
    assert len(bomb) < SETTINGS.max_batch_bytes
    response = await ingest.post("/v1/batch", content=bomb, headers={**AUTH, **GZIP})
    error = error_of(response, 400, "payload_too_large")
    assert "inflates" in error["message"]
    assert 0 < sum(inflated) <= SETTINGS.max_batch_bytes + 1
    assert bus.produced == []


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "compress", "x" * 500])
async def test_other_encodings_are_415_naming_them(
    ingest: httpx.AsyncClient, encoding: str
) -> None:
    headers = {**AUTH, "Content-Encoding": encoding}
    response = await ingest.post("/v1/track", content=b"{}", headers=headers)
    error = error_of(response, 415, "unsupported_encoding")
    assert encoding[:40] in error["message"]
    assert len(error["message"]) < 200


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(b'{"userId": "u", "event": "e"}')[:-12], "truncated"),
        (gzip.compress(b'{"userId": "u", "event": "e"}') + b"junk", "after the end"),
        (b"", "empty"),
    ],
    ids=["junk", "truncated", "trailing", "empty"],
)
async def test_a_body_that_is_not_gzip_is_400(
    ingest: httpx.AsyncClient, content: bytes, problem: str
) -> None:
    response = await ingest.post("/v1/track", content=content, headers={**AUTH, **GZIP})
    assert problem in error_of(response, 400, "malformed_body")["message"]


async def test_identity_encoding_is_a_plain_body(ingest: httpx.AsyncClient) -> None:
    headers = {**AUTH, "Content-Encoding": "identity"}
    response = await ingest.post("/v1/track", json={"userId": "u", "event": "e"}, headers=headers)
    assert response.status_code == 200, response.text


async def test_the_key_is_checked_before_a_gzip_body_is_read(ingest: httpx.AsyncClient) -> None:
    headers = {**basic("wk_wrong_12345"), **GZIP}
    response = await ingest.post("/v1/track", content=b"not gzip", headers=headers)
    error_of(response, 401, "unauthorized")


# 4. Batches the Segment way: the good calls land, the bad ones are reported.

GOOD = {"type": "track", "userId": "u-1", "event": "Fine"}


def invalid_count() -> float:
    value = REGISTRY.get_sample_value(
        "lodestar_ingest_events_total", {"type": "batch", "outcome": "invalid"}
    )
    return value or 0.0


async def test_a_batch_drops_only_its_bad_calls(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    before = invalid_count()
    batch = [
        {**GOOD, "event": "A"},
        {"type": "track", "userId": "u-1"},
        {**GOOD, "event": "C"},
        "not a call",
        {**GOOD, "event": "E", "timestamp": "2999-01-01T00:00:00Z"},
        {**GOOD, "event": "F"},
    ]
    response = await ingest.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["accepted"] == 3
    assert body["rejectedCount"] == 3
    rejected = body["rejected"]
    assert [r["index"] for r in rejected] == [1, 3, 4]
    assert [r["path"] for r in rejected] == ["batch[1].event", "batch[3]", "batch[4].timestamp"]
    assert all(r["code"] == "invalid_event" and r["message"] for r in rejected)
    assert [e.name for e in bus.events()] == ["A", "C", "F"]
    assert invalid_count() - before == 3


async def test_a_batch_of_only_bad_calls_is_400_naming_the_first(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    batch = [{"type": "track", "userId": "u-1"}, {"type": "nope", "userId": "u-1"}]
    response = await ingest.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "batch[0].event"
    assert [r["path"] for r in response.json()["rejected"]] == ["batch[0].event", "batch[1].type"]
    assert bus.produced == []


async def test_an_oversize_item_is_dropped_alone(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    big = {**GOOD, "properties": {"blob": "x" * (33 * 1024)}}
    response = await ingest.post("/v1/batch", json={"batch": [GOOD, big]}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"][0]["path"] == "batch[1]"
    assert len(bus.produced) == 1


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"batch": []}, "batch"),
        ({"batch": {}}, "batch"),
        ([], "body"),
        ({"batch": [GOOD], "context": []}, "context"),
        ({"batch": [GOOD], "integrations": 3}, "integrations"),
        ({"batch": [GOOD], "sentAt": "yesterday"}, "sentAt"),
    ],
)
async def test_a_bad_envelope_refuses_the_whole_batch(
    ingest: httpx.AsyncClient, bus: RecordingBus, body: Any, path: str
) -> None:
    response = await ingest.post("/v1/batch", json=body, headers=AUTH)
    assert error_of(response, 400, "invalid_event")["path"] == path
    assert bus.produced == []


async def test_at_most_2500_calls_in_a_batch(ingest: httpx.AsyncClient, bus: RecordingBus) -> None:
    small = {"type": "track", "userId": "u", "event": "e"}
    response = await ingest.post("/v1/batch", json={"batch": [small] * 2_501}, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "batch"
    assert "2500" in error["message"]
    assert bus.produced == []
    response = await ingest.post("/v1/batch", json={"batch": [small] * 2_500}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert len(bus.produced) == 2_500


async def test_many_rejections_are_counted_and_the_first_hundred_listed(
    ingest: httpx.AsyncClient,
) -> None:
    batch = [GOOD] + [{"type": "track", "userId": "u"}] * 300
    response = await ingest.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejectedCount"] == 300
    assert len(body["rejected"]) == 100


async def test_batch_context_and_integrations_merge_into_each_call(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    body = {
        "batch": [
            {**GOOD, "event": "Own", "context": {"page": {"path": "/a"}, "locale": "fr-FR"}},
            {**GOOD, "event": "Shared"},
        ],
        "context": {"library": {"name": "analytics-python"}, "locale": "en-GB"},
    }
    assert (await ingest.post("/v1/batch", json=body, headers=AUTH)).status_code == 200
    own, shared = (MessageToDict(e.context) for e in bus.events())
    assert own["library"] == {"name": "analytics-python"}
    assert own["page"] == {"path": "/a"}
    assert own["locale"] == "fr-FR"
    assert shared["locale"] == "en-GB"


# 5. integrations: Segment's destination switches, carried to the services.


async def test_integrations_land_in_the_event(ingest: httpx.AsyncClient, bus: RecordingBus) -> None:
    integrations = {"All": False, "Mixpanel": True, "Amplitude": {"session_id": 1700000000}}
    call = {"userId": "u-1", "event": "E", "integrations": integrations}
    assert (await ingest.post("/v1/track", json=call, headers=AUTH)).status_code == 200
    (event,) = bus.events()
    assert event.HasField("integrations")
    assert MessageToDict(event.integrations) == integrations


async def test_without_integrations_the_field_stays_unset(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    assert (await ingest.post("/v1/track", json=GOOD, headers=AUTH)).status_code == 200
    assert not bus.events()[0].HasField("integrations")


async def test_batch_integrations_merge_into_each_call(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    body = {
        "batch": [{**GOOD, "integrations": {"Mixpanel": False}}, GOOD],
        "integrations": {"All": True, "Mixpanel": True},
    }
    assert (await ingest.post("/v1/batch", json=body, headers=AUTH)).status_code == 200
    first, second = (MessageToDict(e.integrations) for e in bus.events())
    assert first == {"All": True, "Mixpanel": False}
    assert second == {"All": True, "Mixpanel": True}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"on": True}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("integrations", "problem"),
    [
        (["Mixpanel"], "must be an object"),
        ("all", "must be an object"),
        ({"Amplitude": nested(6)}, "nested deeper than 5"),
        ({f"Destination {n}": {"key": "v" * 100} for n in range(100)}, "larger than 8192"),
    ],
    ids=["array", "string", "deep", "big"],
)
async def test_bad_integrations_are_400_naming_them(
    ingest: httpx.AsyncClient, bus: RecordingBus, integrations: Any, problem: str
) -> None:
    call = {**GOOD, "integrations": integrations}
    response = await ingest.post("/v1/track", json=call, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "integrations"
    assert problem in error["message"]
    assert bus.produced == []


async def test_integrations_count_in_the_event_id(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    call = {**GOOD, "messageId": "m-int"}
    for integrations in [None, {"All": False}, {"All": False}]:
        body = call if integrations is None else {**call, "integrations": integrations}
        assert (await ingest.post("/v1/track", json=body, headers=AUTH)).status_code == 200
    plain, off, retried = (e.event_id for e in bus.events())
    assert off == retried
    assert plain != off


# 6. context.ip from the request's client address.


def client_at(peer: str, api: IngestApi) -> httpx.AsyncClient:
    app = Starlette(routes=api.routes())
    transport = httpx.ASGITransport(app=app, client=(peer, 40_000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_context_ip_is_the_peer_unless_the_client_set_it(bus: RecordingBus) -> None:
    async with client_at("203.0.113.9", IngestApi(SETTINGS, bus)) as http:
        await http.post("/v1/track", json=GOOD, headers=AUTH)
        own = {**GOOD, "context": {"ip": "198.51.100.1", "locale": "fr"}}
        await http.post("/v1/track", json=own, headers=AUTH)
        await http.post("/v1/batch", json={"batch": [GOOD]}, headers=AUTH)
    peer, client_set, batched = (MessageToDict(e.context) for e in bus.events())
    assert peer == {"ip": "203.0.113.9"}
    assert client_set == {"ip": "198.51.100.1", "locale": "fr"}
    assert batched == {"ip": "203.0.113.9"}


async def test_forwarded_for_counts_only_from_a_trusted_proxy(bus: RecordingBus) -> None:
    behind = SETTINGS.model_copy(update={"ingest_trusted_proxies": ("10.0.0.0/8",)})
    forwarded = {**AUTH, "X-Forwarded-For": "6.6.6.6, 198.51.100.7"}
    async with client_at("10.0.0.5", IngestApi(behind, bus)) as http:
        await http.post("/v1/track", json=GOOD, headers=forwarded)
    async with client_at("203.0.113.9", IngestApi(behind, bus)) as http:
        await http.post("/v1/track", json=GOOD, headers=forwarded)
    async with client_at("10.0.0.5", IngestApi(SETTINGS, bus)) as http:
        await http.post("/v1/track", json=GOOD, headers=forwarded)
    ips = [MessageToDict(e.context)["ip"] for e in bus.events()]
    assert ips == ["198.51.100.7", "203.0.113.9", "10.0.0.5"]


async def test_the_filled_ip_does_not_change_the_event_id(bus: RecordingBus) -> None:
    # A phone retries from another network: still the same event.
    call = {**GOOD, "messageId": "m-roaming"}
    for peer in ("203.0.113.9", "198.51.100.20"):
        async with client_at(peer, IngestApi(SETTINGS, bus)) as http:
            assert (await http.post("/v1/track", json=call, headers=AUTH)).status_code == 200
    first, second = bus.events()
    assert first.event_id == second.event_id
    assert MessageToDict(first.context)["ip"] != MessageToDict(second.context)["ip"]


# 7. Rate limits per write key, counted in events.


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


LIMITED = SETTINGS.model_copy(
    update={
        "ingest_rate_limit_per_s": 10.0,
        "ingest_rate_limit_burst": 20,
        "ingest_max_batch_events": 20,
    }
)


def test_default_limits() -> None:
    assert SETTINGS.ingest_rate_limit_per_s == 2_000
    assert SETTINGS.ingest_rate_limit_burst == 10_000
    with pytest.raises(ValueError, match="BURST"):
        GatewaySettings(write_key=WRITE_KEY, ingest_rate_limit_burst=100)


def limited_count() -> float:
    value = REGISTRY.get_sample_value(
        "lodestar_ingest_events_total", {"type": "batch", "outcome": "rate_limited"}
    )
    return value or 0.0


async def test_over_the_limit_is_429_with_when_to_retry(bus: RecordingBus) -> None:
    clock = FakeClock()
    before = limited_count()
    async with client_of(IngestApi(LIMITED, bus, clock=clock)) as http:
        batch = {"batch": [GOOD] * 15}
        assert (await http.post("/v1/batch", json=batch, headers=AUTH)).status_code == 200
        # 5 tokens left; 15 more need 10 more tokens: one second at 10 a second.
        refused = await http.post("/v1/batch", json=batch, headers=AUTH)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        # analytics-next waits X-RateLimit-Reset seconds (it multiplies it by 1000).
        assert refused.headers["x-ratelimit-reset"] == "1"
        error = error_of(refused, 429, "rate_limited")
        assert "10 events a second" in error["message"]
        assert "20" in error["message"]
        clock.now += 1
        assert (await http.post("/v1/batch", json=batch, headers=AUTH)).status_code == 200
    assert len(bus.produced) == 30
    assert limited_count() - before == 15


async def test_single_calls_count_one_each(bus: RecordingBus) -> None:
    clock = FakeClock()
    async with client_of(IngestApi(LIMITED, bus, clock=clock)) as http:
        statuses = [
            (await http.post("/v1/t", json=GOOD, headers=AUTH)).status_code for _ in range(21)
        ]
        assert statuses == [200] * 20 + [429]
        clock.now += 0.1
        assert (await http.post("/v1/t", json=GOOD, headers=AUTH)).status_code == 200


async def test_unauthenticated_calls_spend_nothing(bus: RecordingBus) -> None:
    clock = FakeClock()
    async with client_of(IngestApi(LIMITED, bus, clock=clock)) as http:
        for _ in range(30):
            wrong = await http.post("/v1/t", json=GOOD, headers=basic("wk_wrong_12345"))
            assert wrong.status_code == 401
        assert (
            await http.post("/v1/batch", json={"batch": [GOOD] * 20}, headers=AUTH)
        ).status_code == 200


async def test_a_client_honouring_retry_after_delivers_everything(bus: RecordingBus) -> None:
    clock = FakeClock()
    sent = [{**GOOD, "event": f"E{n}", "messageId": f"m-{n}"} for n in range(200)]
    throttled = 0
    async with client_of(IngestApi(LIMITED, bus, clock=clock)) as http:
        for start in range(0, len(sent), 8):
            chunk = {"batch": sent[start : start + 8]}
            while True:
                response = await http.post("/v1/b", json=chunk, headers=AUTH)
                if response.status_code != 429:
                    break
                throttled += 1
                clock.now += int(response.headers["retry-after"])
            assert response.status_code == 200, response.text
    assert throttled > 0
    assert [e.name for e in bus.events()] == [call["event"] for call in sent]


async def test_a_batch_over_the_size_limit_is_400_not_a_429_to_retry(bus: RecordingBus) -> None:
    async with client_of(IngestApi(LIMITED, bus, clock=FakeClock())) as http:
        response = await http.post("/v1/batch", json={"batch": [GOOD] * 25}, headers=AUTH)
        assert "at most 20" in error_of(response, 400, "invalid_event")["message"]
        # It cost one token, not 25.
        accepted = await http.post("/v1/batch", json={"batch": [GOOD] * 19}, headers=AUTH)
        assert accepted.status_code == 200


# 8. messageId: at most 100 characters.


async def test_a_message_id_over_100_characters_is_refused(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    response = await ingest.post("/v1/track", json={**GOOD, "messageId": "m" * 101}, headers=AUTH)
    error = error_of(response, 400, "invalid_event")
    assert error["path"] == "messageId"
    assert "longer than 100 characters" in error["message"]
    assert "m" * 101 not in error["message"]
    ok = await ingest.post("/v1/track", json={**GOOD, "messageId": "m" * 100}, headers=AUTH)
    assert ok.status_code == 200, ok.text
    assert bus.events()[0].message_id == "m" * 100


async def test_in_a_batch_only_the_long_message_id_is_rejected(
    ingest: httpx.AsyncClient, bus: RecordingBus
) -> None:
    batch = [
        {**GOOD, "messageId": "a"},
        {**GOOD, "messageId": "b" * 101},
        {**GOOD, "messageId": "c"},
    ]
    response = await ingest.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 200, response.text
    (rejected,) = response.json()["rejected"]
    assert rejected["path"] == "batch[1].messageId"
    assert "longer than 100 characters" in rejected["message"]
    assert [e.message_id for e in bus.events()] == ["a", "c"]


@pytest.mark.parametrize(
    "raw",
    [b'{"writeKey": "\\ud800", "userId": "u", "event": "e"}', b'{"writeKey": "wk\\u0000"}'],
    ids=["surrogate", "nul"],
)
async def test_an_unencodable_body_key_is_401(ingest: httpx.AsyncClient, raw: bytes) -> None:
    error_of(await ingest.post("/v1/t", content=raw, headers=TEXT), 401, "unauthorized")
