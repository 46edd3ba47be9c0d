"""What the wallet's profile-change handler sends MongoDB per batch (a real SecantusDB, its
commands seen by a pymongo command listener): reads in ``$in`` lists of at most 100 ids,
the consent values that changed written in one round trip, and nothing for a redelivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import monitoring

from infra.local.servers import MongoWireServer
from lodestar.v1 import events_pb2, profile_pb2
from services.platform.bus import Delivery
from services.platform.mongo import Document, database
from services.wallet.applepass import PassSigner
from services.wallet.consumers import ProfileChangedHandler
from services.wallet.devcerts import SigningFiles, ensure_dev_certificates
from services.wallet.live import LiveUpdates
from services.wallet.passes import WalletPasses
from services.wallet.records import StoredPass
from services.wallet.store import IN_CHUNK, WalletStore
from services.wallet.templates import PassKind
from tests.support.kafka import unique

PASS_TYPE_ID = "pass.com.example.lodestar.writes"
TEAM_ID = "TEAMWRITE1"
CUSTOMERS = 250
HOLDERS = ("cust-7", "cust-120", "cust-249")


class Commands(monitoring.CommandListener):
    """The commands sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Document]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Keep the command (handshakes and session ends aside)."""
        if event.command_name not in ("hello", "isMaster", "ismaster", "endSessions", "ping"):
            self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to keep."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to keep."""

    def on(self, name: str, collection: str) -> list[Document]:
        """The commands of one name on one collection."""
        return [body for n, body in self.sent if n == name and body.get(n) == collection]


@pytest.fixture(scope="module")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> SigningFiles:
    return ensure_dev_certificates(tmp_path_factory.mktemp("certs"), PASS_TYPE_ID, TEAM_ID)


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def passes(
    mongo_server: MongoWireServer, signing_files: SigningFiles, commands: Commands
) -> AsyncIterator[WalletPasses]:
    client: AsyncIOMotorClient[Document] = AsyncIOMotorClient(
        mongo_server.uri, tz_aware=True, event_listeners=[commands]
    )
    store = WalletStore(database(client, unique("ww").replace("-", "_"), "wallet"))
    await store.ensure_indexes()
    signer = PassSigner.from_files(
        signing_files.certificate, signing_files.key, signing_files.intermediate
    )
    yield WalletPasses(store, signer, "https://wallet.example.com")
    client.close()


def store_of(passes: WalletPasses) -> WalletStore:
    """The MongoDB store the fixture gave the passes."""
    return cast(WalletStore, passes.store)


def changes(points: int) -> list[Delivery[events_pb2.ProfileChanged]]:
    """One change per customer: loyalty figures and wallet_marketing consent (granted for
    even customers)."""
    out = []
    for n in range(CUSTOMERS):
        change = events_pb2.ProfileChanged(
            event_id=f"pc-{n}-{points}",
            customer_id=f"cust-{n}",
            changed_paths=["loyalty"],
            loyalty=profile_pb2.Loyalty(points=points, tier="Silver"),
            consent=[
                profile_pb2.ConsentState(
                    purpose="wallet_marketing", state="granted" if n % 2 == 0 else "denied"
                )
            ],
        )
        out.append(Delivery("profile.changed", 0, n, None, change.SerializeToString(), change))
    return out


def in_lists(found: list[Document], field: str) -> list[int]:
    return [len(body["filter"][field]["$in"]) for body in found]


async def test_a_batch_reads_in_chunks_and_writes_consent_in_one_round_trip(
    passes: WalletPasses, commands: Commands
) -> None:
    for customer in HOLDERS:
        await passes.issue(customer, PassKind.STORE_CARD, "default")
    handler = ProfileChangedHandler(LiveUpdates(passes, store_of(passes)))
    commands.sent.clear()

    await handler(changes(500))

    # Reads: every id once, in lists of at most IN_CHUNK.
    assert sorted(in_lists(commands.on("find", "customers"), "_id")) == [50, 100, 100]
    assert sorted(in_lists(commands.on("find", "passes"), "customer_id")) == [50, 100, 100]
    assert max(in_lists(commands.on("find", "passes"), "customer_id")) <= IN_CHUNK
    # Consent: the 250 new values in one write.
    assert [len(body["updates"]) for body in commands.on("update", "customers")] == [250]
    # Cards: the three holders' cards in one write, after one sequence round trip.
    assert [len(body["updates"]) for body in commands.on("update", "passes")] == [3]
    assert commands.on("findAndModify", "passes") == []
    assert len(commands.on("findAndModify", "counters")) == 1
    remembered = await store_of(passes).customers_of([f"cust-{n}" for n in range(CUSTOMERS)])
    assert [remembered[f"cust-{n}"]["wallet_marketing"] for n in (0, 1, 248, 249)] == [
        True,
        False,
        True,
        False,
    ]
    cards = await passes.of_customers(list(HOLDERS))
    assert [docs[0]["fields"]["points"] for docs in cards.values()] == [500, 500, 500]
    seqs = sorted(docs[0]["update_seq"] for docs in cards.values())
    assert len(set(seqs)) == 3

    # The same batch again (a redelivery): reads only.
    commands.sent.clear()
    await handler(changes(500))
    assert {name for name, _ in commands.sent} == {"find"}


async def test_a_card_changed_meanwhile_is_changed_again_from_a_fresh_read(
    passes: WalletPasses, commands: Commands
) -> None:
    scheduled: list[StoredPass] = []
    passes.on_push_scheduled(lambda _, doc: scheduled.append(doc))
    a = await passes.issue("cust-a", PassKind.STORE_CARD, "default")
    b = await passes.issue("cust-b", PassKind.STORE_CARD, "default")
    # Someone changes card a after the batch read it.
    moved = await passes.apply(a, {"tier": "Gold"})
    assert moved is not None

    done = await passes.apply_many([(a, {"points": 70}), (b, {"points": 80})])

    assert [d["fields"]["points"] for d in done if d is not None] == [70, 80]
    stored_a = await passes.get(a["_id"])
    assert (stored_a["fields"]["tier"], stored_a["fields"]["points"]) == ("Gold", 70)
    assert stored_a["update_seq"] > moved["update_seq"]
    # What the listeners got is what the store holds.
    for doc in (stored_a, await passes.get(b["_id"])):
        latest = [d for d in scheduled if d["_id"] == doc["_id"]][-1]
        assert {k: latest[k] for k in ("fields", "update_seq", "updated_at", "push_due")} == {
            k: doc[k] for k in ("fields", "update_seq", "updated_at", "push_due")
        }
    # Unchanged figures write nothing.
    commands.sent.clear()
    assert await passes.apply_many([(stored_a, {"points": 70})]) == [None]
    assert commands.sent == []


async def test_only_changed_consent_is_written(passes: WalletPasses, commands: Commands) -> None:
    handler = ProfileChangedHandler(LiveUpdates(passes, store_of(passes)))
    await handler(changes(10))
    flipped = changes(10)[:3]
    for delivery in flipped:
        delivery.message.consent[0].state = "denied"
    commands.sent.clear()
    await handler(flipped)
    # cust-0 and cust-2 were granted: two values change, in one write; cust-1 stays denied.
    assert [len(body["updates"]) for body in commands.on("update", "customers")] == [2]
    remembered = await store_of(passes).customers_of(["cust-0", "cust-1", "cust-2"])
    assert {c: d["wallet_marketing"] for c, d in remembered.items()} == {
        "cust-0": False,
        "cust-1": False,
        "cust-2": False,
    }
