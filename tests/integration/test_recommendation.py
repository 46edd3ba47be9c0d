"""Recommendation against real SecantusDB and Tansu, and over a real gRPC channel: interactions
stored once under redelivery, catalog over event properties, models as GridFS artifacts that
another replica loads, a model swap under concurrent calls, the training lease, bad-input
codes, and erasure from the interactions, the served model and every stored artifact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.struct_pb2 import Struct
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import KafkaWireServer, MongoWireServer
from lodestar.v1 import events_pb2, recommendation_pb2, recommendation_pb2_grpc
from services.platform import topics
from services.platform.bus import Bus, BusConfig, Delivery, ensure_topics
from services.platform.errors import Unavailable
from services.platform.mongo import Document, database, mongo_client
from services.platform.privacy import PrivacyHandler
from services.platform.rpc import GrpcServer
from services.recommendation.api import RecommendationServicer
from services.recommendation.consumers import ResolvedEventHandler, merge_handler
from services.recommendation.interactions import InteractionWeights, ItemProperties
from services.recommendation.server import SERVICE_NAME
from services.recommendation.serving import Recommendations
from services.recommendation.store import RecommendationStore
from services.recommendation.trainer import Trainer, TrainingPlan
from services.recommendation.training import TrainingConfig
from tests.support.kafka import eventually, read_all, unique

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
PLAN = TrainingPlan(
    config=TrainingConfig(factors=4, regularization=0.1, iterations=8, weighting="none"),
    weights=InteractionWeights(half_life_days=30),
    keep_models=2,
)
SHOES = ("boots", "sneakers", "sandals", "slippers")
COATS = ("parka", "raincoat", "trench", "poncho")


def track(
    customer: str, event_id: str, event: str, at: datetime = NOW, **properties: Any
) -> Delivery[events_pb2.Event]:
    props = Struct()
    props.update(properties)
    message = events_pb2.Event(
        event_id=event_id,
        customer_id=customer,
        type=events_pb2.EVENT_TYPE_TRACK,
        name=event,
        properties=props,
    )
    message.timestamp.FromDatetime(at)
    return Delivery("resolved", 0, 0, None, message.SerializeToString(), message)


def shop_events(prefix: str) -> list[Delivery[events_pb2.Event]]:
    """Six shoe customers and six coat customers, each viewing three of their four items and
    ordering one pair; coat customers also view one shoe."""
    batch = []
    for n in range(12):
        customer = f"{prefix}-{n}"
        group = SHOES if n < 6 else COATS
        for k in range(3):
            item = group[(n + k) % 4]
            batch.append(
                track(
                    customer,
                    f"{customer}-v{k}",
                    "Product Viewed",
                    product_id=item,
                    category=("shoes" if group is SHOES else "outerwear"),
                )
            )
        products = [{"product_id": group[n % 4]}, {"product_id": group[(n + 1) % 4]}]
        batch.append(
            track(customer, f"{customer}-o", "Order Completed", order_id=f"o{n}", products=products)
        )
        if group is COATS:
            batch.append(track(customer, f"{customer}-x", "Product Viewed", product_id="boots"))
    return batch


@pytest.fixture
async def store(mongo_server: MongoWireServer) -> AsyncIterator[RecommendationStore]:
    client: AsyncIOMotorClient[Document] = mongo_client(mongo_server.uri, "tests")
    store = RecommendationStore(database(client, unique("reco").replace("-", "_"), "rec"))
    await store.ensure_indexes()
    yield store
    client.close()


def trainer_for(store: RecommendationStore, holder: str = "replica-a") -> Trainer:
    return Trainer(store, Recommendations(store), PLAN, clock=lambda: NOW, holder=holder)


async def test_interactions_are_stored_once_and_the_catalog_wins_over_events(
    store: RecommendationStore,
) -> None:
    handler = ResolvedEventHandler(store)
    batch = [
        track("c1", "e1", "Product Viewed", product_id="p1", name="Old name", price=10),
        track("c1", "e2", "Order Completed", products=[{"product_id": "p1"}, {"sku": "p2"}]),
        track("c1", "e3", "Checkout Started", product_id="p3"),
    ]
    await handler(batch)
    await handler(batch)  # redelivered
    stored = await store.interactions_of("c1")
    assert sorted((i.item_id, i.kind) for i in stored) == [
        ("p1", "ordered"),
        ("p1", "viewed"),
        ("p2", "ordered"),
    ]
    items, mark = await store.items_changed_since(None)
    assert items["p1"] == ItemProperties("p1", "Old name", price=10.0)
    assert "p3" not in items
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.import_catalog([ItemProperties("p1", "Boots", "shoes")], later) == 1
    changed, _ = await store.items_changed_since(mark)
    assert changed["p1"] == ItemProperties("p1", "Boots", "shoes", 10.0)


async def test_a_merged_customers_interactions_follow_the_survivor(
    store: RecommendationStore,
) -> None:
    await ResolvedEventHandler(store)([track("old", "e1", "Product Viewed", product_id="p")])
    merge = events_pb2.IdentityMerged(event_id="m1", survivor_id="new", merged_ids=["old"])
    await merge_handler(store)([Delivery("merged", 0, 0, None, b"", merge)])
    assert await store.interactions_of("old") == []
    assert [i.item_id for i in await store.interactions_of("new")] == ["p"]


async def test_a_model_is_stored_in_gridfs_and_another_replica_serves_it(
    store: RecommendationStore,
) -> None:
    await ResolvedEventHandler(store)(shop_events("c"))
    trainer = trainer_for(store)
    info = await trainer.train()
    assert (info.version, info.algorithm, info.trained_at) == (1, "als", NOW)
    assert info.interactions == 12 * 3 + 12 * 2 + 6
    assert info.parameters["weights"]["half_life_days"] == 30
    trained = trainer.serving.model
    assert trained is not None
    replica = Recommendations(store)
    assert await replica.refresh()
    loaded = replica.model
    assert loaded is not None
    assert loaded.customer_ids == trained.customer_ids
    np.testing.assert_array_equal(loaded.item_factors, trained.item_factors)
    np.testing.assert_array_equal(loaded.together.toarray(), trained.together.toarray())
    assert not await replica.refresh()  # nothing new
    answer = replica.recommender.recommend("c-0", 3, exclude_purchased=True)
    assert answer.strategy == "personalized"
    assert {item for item, _ in answer.items} <= set(SHOES) | set(COATS)
    assert answer.items[0][0] in SHOES
    assert replica.recommender.category_of("parka") == "outerwear"
    together = replica.recommender.bought_together("boots", 3)
    assert together.strategy == "bought_together"
    assert together.items[0][0] in SHOES
    for _ in range(2):
        await trainer.train()
    assert [d["version"] for d in await store.model_documents()] == [3, 2]  # two kept
    assert await replica.refresh()
    assert replica.recommender.version == 3


async def test_the_lease_lets_one_replica_train_at_a_time(store: RecommendationStore) -> None:
    await ResolvedEventHandler(store)(shop_events("c"))
    assert await store.acquire_lease("training", "replica-b", timedelta(minutes=5), NOW)
    with pytest.raises(Unavailable, match="another replica is training"):
        await trainer_for(store, "replica-a").train()
    await store.release_lease("training", "replica-b")
    assert (await trainer_for(store, "replica-a").train()).version == 1
    expired = NOW + timedelta(hours=2)
    assert await store.acquire_lease("training", "replica-b", timedelta(minutes=5), expired)


@dataclass
class Service:
    stub: recommendation_pb2_grpc.RecommendationServiceAsyncStub
    serving: Recommendations
    trainer: Trainer
    store: RecommendationStore


@pytest.fixture
async def service(store: RecommendationStore) -> AsyncIterator[Service]:
    trainer = trainer_for(store)
    servicer = RecommendationServicer(trainer.serving, trainer, store)
    server = GrpcServer(
        "127.0.0.1",
        0,
        [SERVICE_NAME],
        lambda s: recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server(servicer, s),
        default_deadline_s=30,
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        yield Service(stub, trainer.serving, trainer, store)
    await server.stop(0)


async def test_bad_input_and_an_empty_store_get_status_codes_a_caller_acts_on(
    service: Service,
) -> None:
    stub = service.stub
    calls: list[tuple[Awaitable[object], str]] = [
        (stub.Recommend(recommendation_pb2.RecommendRequest(n=5)), "customer_id"),
        (stub.Recommend(recommendation_pb2.RecommendRequest(customer_id="c", n=500)), "n must"),
        (stub.SimilarItems(recommendation_pb2.SimilarItemsRequest()), "item_id"),
        (stub.Popular(recommendation_pb2.PopularRequest(n=-3)), "n must"),
    ]
    for call, field in calls:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (error.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.Train(recommendation_pb2.TrainRequest())
    assert empty.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no interactions" in (empty.value.details() or "")
    info = await stub.GetModelInfo(recommendation_pb2.GetModelInfoRequest())
    assert info.version == 0
    cold = await stub.Recommend(recommendation_pb2.RecommendRequest(customer_id="anyone"))
    assert (list(cold.items), cold.strategy) == (
        [],
        recommendation_pb2.RECOMMENDATION_STRATEGY_POPULAR,
    )


async def test_no_call_fails_while_models_are_swapped(service: Service) -> None:
    await ResolvedEventHandler(service.store)(shop_events("c"))
    first = await service.stub.Train(recommendation_pb2.TrainRequest())
    assert (first.version, first.customers, first.items) == (1, 12, 8)
    imported = await service.stub.ImportCatalog(
        recommendation_pb2.ImportCatalogRequest(
            items=[recommendation_pb2.CatalogItem(item_id="boots", name="Trail boots", price=129)]
        )
    )
    assert imported.imported == 1
    versions: set[int] = set()
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def caller(n: int) -> None:
        while not stop.is_set():
            try:
                reply = await service.stub.Recommend(
                    recommendation_pb2.RecommendRequest(customer_id=f"c-{n % 12}", n=3)
                )
            except grpc.aio.AioRpcError as error:
                failures.append(error)
                return
            assert reply.strategy == recommendation_pb2.RECOMMENDATION_STRATEGY_PERSONALIZED
            assert len(reply.items) == 3
            versions.add(reply.model_version)

    callers = [asyncio.create_task(caller(n)) for n in range(8)]
    for _ in range(3):
        await service.stub.Train(recommendation_pb2.TrainRequest())
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*callers)
    assert failures == []
    assert versions >= {1, 4}
    boots = await service.stub.Popular(recommendation_pb2.PopularRequest(n=8, category="shoes"))
    shown = {i.item_id: i for i in boots.items}
    assert (shown["boots"].name, shown["boots"].price) == ("Trail boots", 129)
    info = await service.stub.GetModelInfo(recommendation_pb2.GetModelInfoRequest())
    assert info.version == 4
    assert info.metrics["train_seconds"] >= 0


async def test_erasure_reaches_the_interactions_the_served_model_and_every_artifact(
    store: RecommendationStore, kafka_server: KafkaWireServer
) -> None:
    await ResolvedEventHandler(store)(shop_events("c"))
    trainer = trainer_for(store)
    await trainer.train()
    await trainer.train()
    other_replica = Recommendations(store)
    await other_replica.refresh()
    assert "c-3" in other_replica.recommender.user_index

    await ensure_topics(kafka_server.bootstrap_servers, {topics.PRIVACY_COMPLETED: 6})
    bus = Bus(BusConfig(kafka_server.bootstrap_servers, "test-recommendation"))
    await bus.start()
    try:
        request_id = unique("erase")
        request = events_pb2.PrivacyRequest(
            request_id=request_id, kind=events_pb2.PRIVACY_REQUEST_KIND_ERASE, customer_id="c-3"
        )
        handler = PrivacyHandler(
            "recommendation", bus, erase=trainer.serving.erase, export=trainer.serving.export
        )
        await handler([Delivery("privacy", 0, 0, None, b"", request)])
        await handler([Delivery("privacy", 0, 0, None, b"", request)])  # redelivered
    finally:
        await bus.stop()

    assert await store.interactions_of("c-3") == []
    assert "c-3" not in trainer.serving.recommender.user_index
    assert trainer.serving.recommender.recommend("c-3", 3).strategy == "popular"
    for doc in await store.model_documents():
        stored = await store.load_model(doc)
        assert "c-3" not in stored.customer_ids
        assert stored.info.revision == 1
        assert len(stored.customer_ids) == 11
    assert await other_replica.refresh()  # the rewritten artifact is picked up
    assert "c-3" not in other_replica.recommender.user_index
    assert (await trainer.train()).version == 3
    newest = trainer.serving.model
    assert newest is not None
    assert "c-3" not in newest.customer_ids
    export = await trainer.serving.export("c-3")
    assert export == {"interactions": [], "in_served_model": False}

    async def answered() -> bool:
        records = await read_all(kafka_server.bootstrap_servers, topics.PRIVACY_COMPLETED)
        answers = [events_pb2.PrivacyCompleted.FromString(r.value) for r in records]
        return any(a.request_id == request_id and a.service == "recommendation" for a in answers)

    await eventually(answered, 20, "the erasure answered on privacy.completed")


async def test_export_lists_what_is_held(store: RecommendationStore) -> None:
    await ResolvedEventHandler(store)(shop_events("c"))
    trainer = trainer_for(store)
    await trainer.train()
    export = await trainer.serving.export("c-0")
    assert export["in_served_model"] is True
    assert len(export["interactions"]) == 5
    assert {i["kind"] for i in export["interactions"]} == {"viewed", "ordered"}
