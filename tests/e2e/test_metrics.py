"""The metrics that must exist, scraped from the running platform's ``/metrics`` doors: every
RPC counted and timed, consumer lag per partition, messages processed and dead-lettered, and
the domain counters (ingest rejections by reason, merges, segment entries and exits, passes
issued, pushes sent). Counters are compared before and after what the test did: the stack
is shared with the other tests of the session."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from infra.local.stack import DEV_PASS_TYPE_ID, SERVICES, Stack
from lodestar.v1 import (
    events_pb2,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.platform import topics
from tests.support.kafka import eventually, partitions_of, unique
from tests.support.platform import Platform

pytestmark = pytest.mark.e2e

Labels = dict[str, str]


class Scrape:
    """One ``/metrics`` page, parsed."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, Labels, float]] = [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
        self.text = text

    def find(self, name: str) -> list[tuple[Labels, float]]:
        """Every sample of ``name`` with its labels."""
        return [(labels, value) for found, labels, value in self.samples if found == name]

    def value(self, name: str, **labels: str) -> float:
        """The sample of ``name`` with exactly ``labels`` (0 when there is none yet)."""
        return sum(value for found, value in self.find(name) if found == labels)


def metrics_url(stack: Stack, name: str) -> str:
    return (
        f"{stack.gateway_url}/metrics"
        if name == "gateway"
        else f"http://127.0.0.1:{stack.ports.metrics[name]}/metrics"
    )


async def scrape(client: httpx.AsyncClient, stack: Stack, name: str) -> Scrape:
    reply = await client.get(metrics_url(stack, name))
    assert reply.status_code == 200, reply.text[:200]
    return Scrape(reply.text)


async def grows(
    client: httpx.AsyncClient,
    stack: Stack,
    name: str,
    metric: str,
    labels: Labels,
    before: float,
    what: str,
) -> float:
    """Wait until ``metric{labels}`` of process ``name`` is above ``before``; returns it."""
    seen = before

    async def above() -> bool:
        nonlocal seen
        seen = (await scrape(client, stack, name)).value(metric, **labels)
        return seen > before

    await eventually(above, 120, what, 0.3)
    return seen


async def test_every_service_counts_and_times_its_rpcs(platform: Platform, stack: Stack) -> None:
    for name in SERVICES:
        page = await scrape(platform.client, stack, name)
        calls = page.find("lodestar_grpc_requests_total")
        assert calls, f"{name} counts no RPC"
        assert all(set(labels) == {"method", "code"} for labels, _ in calls), calls
        # The launcher asked every service's health before it went on.
        health = "/grpc.health.v1.Health/Check"
        assert page.value("lodestar_grpc_requests_total", method=health, code="OK") >= 1, name
        timed = page.find("lodestar_grpc_latency_seconds_count")
        assert any(labels == {"method": health} and n >= 1 for labels, n in timed), name


async def test_consumer_lag_is_reported_for_every_partition(
    platform: Platform, stack: Stack
) -> None:
    partitions = {
        topic: {str(tp.partition) for tp in await partitions_of(stack.kafka_bootstrap, topic)}
        for topic in topics.ALL_TOPICS
    }

    def every_partition(name: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            held: dict[tuple[str, str], set[str]] = {}
            for labels, value in (await scrape(platform.client, stack, name)).find(
                "lodestar_consumer_lag"
            ):
                assert set(labels) == {"group", "topic", "partition"}, labels
                assert value >= 0, (labels, value)
                held.setdefault((labels["group"], labels["topic"]), set()).add(labels["partition"])
            # One process per service: it holds every partition of what it consumes.
            return bool(held) and all(held[key] == partitions[key[1]] for key in held)

        return check

    for name in SERVICES:
        await eventually(every_partition(name), 60, f"{name} reporting lag on every partition", 0.5)
    identity = await scrape(platform.client, stack, "identity")
    raw = [
        labels
        for labels, _ in identity.find("lodestar_consumer_lag")
        if labels["group"] == "identity"
    ]
    assert {labels["topic"] for labels in raw} == {topics.EVENTS_RAW}


async def test_a_rejected_event_is_counted_by_its_reason(platform: Platform, stack: Stack) -> None:
    labels = {"type": "track", "reason": "invalid_event"}
    before = (await scrape(platform.client, stack, "gateway")).value(
        "lodestar_ingest_rejected_total", **labels
    )
    response = await platform.send("/v1/track", {"userId": unique("no-event")})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_event"
    after = await scrape(platform.client, stack, "gateway")
    assert after.value("lodestar_ingest_rejected_total", **labels) == before + 1
    # The reason is the answered code, never the call's content.
    assert "no-event" not in after.text


async def test_processed_and_dead_lettered_messages_are_counted(
    platform: Platform, stack: Stack
) -> None:
    processed = {"topic": topics.EVENTS_RAW, "group": "identity", "outcome": "ok"}
    dead = {"group": "identity", "topic": topics.EVENTS_RAW, "reason": "poison"}
    page = await scrape(platform.client, stack, "identity")
    before_ok = page.value("lodestar_bus_consumed_total", **processed)
    before_dead = page.value("lodestar_bus_dead_lettered_total", **dead)
    user = unique("counted")
    assert (await platform.send("/v1/track", {"userId": user, "event": "Ok"})).status_code == 200
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        # An event without an id: identity refuses it (and other readers of the shared topic
        # still decode it).
        refused = events_pb2.Event(name=unique("no-id")).SerializeToString()
        await producer.send_and_wait(topics.EVENTS_RAW, key=b"metrics", value=refused)
    finally:
        await producer.stop()
    await grows(
        platform.client,
        stack,
        "identity",
        "lodestar_bus_consumed_total",
        processed,
        before_ok,
        "identity counting the event it handled",
    )
    assert (
        await grows(
            platform.client,
            stack,
            "identity",
            "lodestar_bus_dead_lettered_total",
            dead,
            before_dead,
            "identity counting the event it refused and dead-lettered",
        )
        == before_dead + 1
    )


async def merged_customer(platform: Platform) -> str:
    """An anonymous visitor and a known user joined by an alias (a merge); the customer id."""
    anonymous, user = unique("visitor"), unique("member")
    sent = await platform.send("/v1/track", {"anonymousId": anonymous, "event": "Product Viewed"})
    assert sent.status_code == 200, sent.text
    customer_id = await platform.known_customer(user, plan="gold")

    async def visitor_known() -> bool:
        return await platform.customer("anonymous_id", anonymous) is not None

    await eventually(visitor_known, 30, "the anonymous visitor", 0.2)
    aliased = await platform.send("/v1/alias", {"previousId": anonymous, "userId": user})
    assert aliased.status_code == 200, aliased.text
    return customer_id


async def test_merges_segments_passes_and_pushes_are_counted(
    platform: Platform, stack: Stack
) -> None:
    client = platform.client

    async def value(name: str, metric: str, **labels: str) -> float:
        return (await scrape(client, stack, name)).value(metric, **labels)

    merges = await value("identity", "lodestar_identity_merges_total")
    customer_id = await merged_customer(platform)
    await grows(
        client, stack, "identity", "lodestar_identity_merges_total", {}, merges, "a merge counted"
    )

    tag = unique("probe")
    change = "lodestar_segment_membership_changes_total"
    entered = await value("segmentation", change, change="entered")
    exited = await value("segmentation", change, change="exited")
    async with stack.grpc_channel("segmentation") as channel:
        segments = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        rule = {"event": "Metric Probe", "where": [{"field": "tag", "op": "eq", "value": tag}]}
        await segments.CreateSegment(
            segmentation_pb2.CreateSegmentRequest(id=tag, name=tag, rule_json=json.dumps(rule))
        )
        probe = {"userId": unique("prober"), "event": "Metric Probe", "properties": {"tag": tag}}
        assert (await platform.send("/v1/track", probe)).status_code == 200
        await grows(
            client, stack, "segmentation", change, {"change": "entered"}, entered, "an entry"
        )
        await segments.DeleteSegment(segmentation_pb2.DeleteSegmentRequest(id=tag))
    assert await value("segmentation", change, change="exited") >= exited + 1

    issued = "lodestar_wallet_passes_issued_total"
    pushes = "lodestar_wallet_pushes_total"
    before = {
        platform_: (
            await value("wallet", issued, kind="storeCard", platform=platform_),
            await value("wallet", pushes, platform=platform_, outcome="sent"),
        )
        for platform_ in ("apple", "google")
    }
    async with stack.grpc_channel("wallet") as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        cards = {
            name: await wallet.IssuePass(
                wallet_pb2.IssuePassRequest(
                    customer_id=customer_id, kind=wallet_pb2.PASS_KIND_STORE_CARD, platform=kind
                )
            )
            for name, kind in (
                ("apple", wallet_pb2.WALLET_PLATFORM_APPLE),
                ("google", wallet_pb2.WALLET_PLATFORM_GOOGLE),
            )
        }
        apple = cards["apple"]
        async with httpx.AsyncClient(base_url=apple.web_service_url, timeout=30) as passkit:
            registered = await passkit.post(
                f"/v1/devices/{unique('phone')}/registrations/{DEV_PASS_TYPE_ID}/"
                f"{apple.serial_number}",
                json={"pushToken": "7c" * 32},
                headers={"Authorization": f"ApplePass {apple.authentication_token}"},
            )
        assert registered.status_code == 201, registered.text
        for card in cards.values():
            await wallet.UpdatePass(
                wallet_pb2.UpdatePassRequest(
                    serial_number=card.serial_number, fields={"points": "7"}
                )
            )
    page = await scrape(client, stack, "wallet")
    for platform_, (issued_before, _) in before.items():
        assert page.value(issued, kind="storeCard", platform=platform_) == issued_before + 1
    for platform_, (_, sent_before) in before.items():
        labels = {"platform": platform_, "outcome": "sent"}
        await grows(client, stack, "wallet", pushes, labels, sent_before, f"a {platform_} push")


async def test_the_gateway_and_services_document_their_metrics(
    platform: Platform, stack: Stack
) -> None:
    for name in ("gateway", *SERVICES):
        text = (await scrape(platform.client, stack, name)).text
        ours = [f for f in text_string_to_metric_families(text) if f.name.startswith("lodestar_")]
        assert ours, name
        for family in ours:
            assert family.documentation.strip(), f"{name}: {family.name} has no HELP text"
