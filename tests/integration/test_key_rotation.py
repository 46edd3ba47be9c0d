"""PII key rotation across the platform, against the real MongoDB-wire server: identity and
profile PII written under key A through the services' own code paths, rotated to key B (and
a new blind-index key) by the rotation command run as a user runs it, then read back over
gRPC with a key ring that holds only B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from motor.motor_asyncio import AsyncIOMotorClient

from infra.local.servers import MongoWireServer
from lodestar.v1 import (
    common_pb2,
    events_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
)
from services.identity.api import IdentityServicer
from services.identity.consumers import identity_export
from services.identity.resolution import EventIdentifiers
from services.identity.rules import IdentityRules
from services.identity.server import SERVICE_NAME as IDENTITY
from services.identity.store import IdentityStore
from services.platform.bus import Delivery
from services.platform.crypto import EncryptedValue, FieldCipher, cipher_from_settings, generate_key
from services.platform.mongo import Document, database
from services.platform.rpc import GrpcServer
from services.profile.api import ProfileServicer
from services.profile.consumers import ResolvedEventHandler
from services.profile.groups import GroupChange
from services.profile.server import SERVICE_NAME as PROFILE
from services.profile.store import ProfileStore
from tests.support.identity import resolver
from tests.support.kafka import unique
from tests.support.privacy import WirePrivacyRequests

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_A, KEY_B = generate_key(), generate_key()
INDEX_1, INDEX_2 = generate_key(), generate_key()
PII_TRAITS = frozenset({"email", "phone", "name", "address"})
T0 = datetime(2026, 2, 1, 9, tzinfo=UTC)
# Ada's employer, as a group call stores it: a PII trait (encrypted) and a plain one.
GROUP_TRAITS = {"email": "billing@acme.example", "plan": "pro"}
ROTATE = [sys.executable, "-m", "services.rotate_keys"]
# The command the README used to give: it must rotate every service's PII, not identity's.
IDENTITY_ROTATE = [sys.executable, "-m", "services.identity", "rotate-keys"]

PEOPLE: dict[str, dict[str, Any]] = {
    "ada": {
        "identifiers": [
            ("user_id", "u-ada"),
            ("email", "Ada.Lovelace@Example.com"),
            ("phone", "+1 650-253-0000"),
        ],
        "stored": {
            ("user_id", "u-ada"),
            ("email", "ada.lovelace@example.com"),
            ("phone", "+16502530000"),
        },
        "traits": {
            "email": "ada.lovelace@example.com",
            "phone": "+16502530000",
            "name": "Ada Lovelace",
            "address": {"city": "London", "street": "12 St James's Square"},
            "plan": "pro",
        },
    },
    "bob": {
        "identifiers": [("user_id", "u-bob"), ("email", "bob@example.org")],
        "stored": {("user_id", "u-bob"), ("email", "bob@example.org")},
        "traits": {"email": "bob@example.org", "name": "Bob Builder", "plan": "free"},
    },
}


def ring(*keys: tuple[str, str]) -> str:
    return ",".join(f"{key_id}:{key}" for key_id, key in keys)


def cipher(keys: str, active: str, index_key: str) -> FieldCipher:
    return cipher_from_settings(keys, active, index_key)


@dataclass
class World:
    client: AsyncIOMotorClient[Document]
    uri: str
    prefix: str
    customers: dict[str, str]
    request_id: str
    export: dict[str, Any]

    def stores(self, pii: FieldCipher) -> tuple[IdentityStore, ProfileStore, WirePrivacyRequests]:
        identity = IdentityStore(
            database(self.client, self.prefix, "identity"), pii, IdentityRules.build()
        )
        db = database(self.client, self.prefix, "profile")
        return identity, ProfileStore(db, 100, pii, PII_TRAITS), WirePrivacyRequests(db, pii)

    def run(self, command: list[str], *, keys: str, active: str, index_key: str) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LODESTAR_")}
        env |= {
            "LODESTAR_MONGO_URI": self.uri,
            "LODESTAR_MONGO_DATABASE_PREFIX": self.prefix,
            "LODESTAR_PII_KEYS": keys,
            "LODESTAR_PII_ACTIVE_KEY_ID": active,
            "LODESTAR_PII_INDEX_KEY": index_key,
        }
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    async def documents(self) -> list[Document]:
        """Every document of both services' databases."""
        found = []
        for service in ("identity", "profile"):
            db = database(self.client, self.prefix, service)
            for name in sorted(await db.list_collection_names()):
                found += await db[name].find({}).sort("_id", 1).to_list(None)
        return found


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def collections(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(x["service"], x["collection"]): x for x in self.lines if "collection" in x}

    @property
    def summary(self) -> dict[str, Any]:
        (found,) = [x for x in self.lines if x.get("summary")]
        return found


def resolved(event_id: str, customer_id: str, at: datetime, **fields: Any) -> Delivery[Any]:
    event = events_pb2.Event(event_id=event_id, customer_id=customer_id, source="web", **fields)
    event.timestamp.FromDatetime(at)
    return Delivery("resolved", 0, 0, None, event.SerializeToString(), event)


@pytest.fixture
async def world(client: AsyncIOMotorClient[Document], mongo_server: MongoWireServer) -> World:
    """Both people's identifiers, profiles, timelines and a finished export, all under key A
    and index key 1, written the way the services write them."""
    prefix = unique("rot").replace("-", "_")
    old = cipher(ring(("ka", KEY_A)), "ka", INDEX_1)
    world = World(client, mongo_server.uri, prefix, {}, "export-1", {})
    identity, profile, requests = world.stores(old)
    await identity.ensure_indexes()
    await profile.ensure_indexes()
    r = resolver(identity)
    for n, (name, person) in enumerate(PEOPLE.items()):
        outcome = await r.resolve(
            [EventIdentifiers(f"id-{name}", person["identifiers"], "web", T0)]
        )
        world.customers[name] = outcome.customer_ids[0]
        traits = events_pb2.Event().traits
        traits.update(person["traits"])
        properties = events_pb2.Event().properties
        properties.update({"product_id": f"sku-{n}"})
        await ResolvedEventHandler(profile)(
            [
                resolved(
                    f"ev-{name}-1",
                    world.customers[name],
                    T0 + timedelta(minutes=1),
                    type=events_pb2.EVENT_TYPE_IDENTIFY,
                    traits=traits,
                ),
                resolved(
                    f"ev-{name}-2",
                    world.customers[name],
                    T0 + timedelta(minutes=2),
                    type=events_pb2.EVENT_TYPE_TRACK,
                    name="Product Viewed",
                    properties=properties,
                ),
            ]
        )
    ada = world.customers["ada"]
    await profile.apply_groups(
        [GroupChange("ev-ada-group", "acme", ada, GROUP_TRAITS, T0 + timedelta(minutes=3))]
    )
    await requests.open(world.request_id, events_pb2.PRIVACY_REQUEST_KIND_EXPORT, T0)
    world.export = {
        "identity": await identity_export(identity)(ada),
        "profile": json.loads(json.dumps(await profile.export(ada))),
    }
    for service, data in world.export.items():
        answer = events_pb2.PrivacyCompleted(
            request_id=world.request_id,
            service=service,
            kind=events_pb2.PRIVACY_REQUEST_KIND_EXPORT,
            customer_id=ada,
        )
        answer.export.update(data)
        answer.completed_at.FromDatetime(T0 + timedelta(minutes=5))
        await requests.answer(answer)
    return world


BOTH = ring(("ka", KEY_A), ("kb", KEY_B))
ONLY_B = ring(("kb", KEY_B))


@pytest.mark.parametrize("command", [ROTATE, IDENTITY_ROTATE], ids=["rotate_keys", "identity"])
async def test_after_rotation_every_service_reads_its_pii_with_only_the_new_key(
    world: World, command: list[str]
) -> None:
    done = world.run(command, keys=BOTH, active="kb", index_key=INDEX_2)
    assert done.code == 0, done.stdout + done.stderr

    new = cipher(ONLY_B, "kb", INDEX_2)
    identity, profile, requests = world.stores(new)

    def register(server: grpc.aio.Server) -> None:
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(
            IdentityServicer(identity, resolver(identity)), server
        )
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(profile), server)

    server = GrpcServer("127.0.0.1", 0, [IDENTITY, PROFILE], register, default_deadline_s=10)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            identities = identity_pb2_grpc.IdentityServiceStub(channel)
            profiles = profile_pb2_grpc.ProfileServiceStub(channel)
            for name, person in PEOPLE.items():
                customer = world.customers[name]
                for type_, value in person["identifiers"]:
                    found = await identities.Lookup(
                        identity_pb2.LookupRequest(
                            identifier=common_pb2.Identifier(type=type_, value=value)
                        ),
                        timeout=10,
                    )
                    assert found.customer_id == customer
                    assert {(i.type, i.value) for i in found.identifiers} == person["stored"]
                every = await identities.GetIdentities(
                    identity_pb2.GetIdentitiesRequest(customer_id=customer), timeout=10
                )
                assert {(i.type, i.value) for i in every.identifiers} == person["stored"]

                shown = await profiles.GetProfile(
                    profile_pb2.GetProfileRequest(customer_id=customer), timeout=10
                )
                assert MessageToDict(shown.traits) == person["traits"]
                timeline = await profiles.ListTimeline(
                    profile_pb2.ListTimelineRequest(customer_id=customer), timeout=10
                )
                entries = {e.event_id: MessageToDict(e.traits) for e in timeline.entries}
                assert entries == {f"ev-{name}-1": person["traits"], f"ev-{name}-2": {}}
                exported = await profiles.Export(
                    profile_pb2.ExportRequest(customer_id=customer), timeout=10
                )
                assert MessageToDict(exported.data)["traits"] == person["traits"]
            group = await profiles.GetGroup(profile_pb2.GetGroupRequest(group_id="acme"))
            assert MessageToDict(group.traits) == GROUP_TRAITS
    finally:
        await server.stop(0)
    # The privacy export (identity's and profile's, timeline included) reads back whole.
    status = await requests.status(world.request_id)
    assert MessageToDict(status.export) == world.export
    assert world.export["profile"]["traits"] == PEOPLE["ada"]["traits"]
    assert [e["traits"] for e in world.export["profile"]["events"]] == [
        {},
        PEOPLE["ada"]["traits"],
    ]
    assert {(i["type"], i["value"]) for i in world.export["identity"]["identifiers"]} == (
        PEOPLE["ada"]["stored"]
    )

    # Nothing anywhere is still under key A.
    stored = json.dumps([_key_ids(d) for d in await world.documents()])
    assert '"ka"' not in stored
    assert '"kb"' in stored


def _key_ids(doc: Any) -> Any:
    """The key ids of the encrypted values in a document, where they sit."""
    if isinstance(doc, dict):
        if set(doc) == {"kid", "n", "ct"}:
            return doc["kid"]
        return {k: _key_ids(v) for k, v in doc.items() if not isinstance(v, bytes)}
    if isinstance(doc, list):
        return [_key_ids(v) for v in doc]
    return None


async def test_the_command_reports_what_is_left_per_service_and_a_second_run_is_a_no_op(
    world: World,
) -> None:
    before = await world.documents()
    check = world.run([*ROTATE, "--check"], keys=BOTH, active="kb", index_key=INDEX_2)
    assert check.code == 1, check.stdout + check.stderr
    assert check.summary["left"] > 0
    assert check.summary["old_keys_may_be_dropped"] is False
    assert check.summary["services"]["identity"]["left"] == 3  # two e-mails and a phone
    assert check.summary["services"]["profile"]["left"] > 0
    assert all(c["rotated"] == 0 for c in check.collections.values())
    assert check.collections["identity", "identifiers"]["stale_index"] == 3
    assert check.collections["profile", "profiles"]["left_by_key"] == {"ka": 6}
    assert check.collections["profile", "timeline"]["left_by_key"] == {"ka": 2}
    assert check.collections["profile", "groups"]["left_by_key"] == {"ka": 1}
    assert check.collections["profile", "privacy_requests"]["left_by_key"] == {"ka": 2}
    assert await world.documents() == before  # --check changes nothing

    rotated = world.run(ROTATE, keys=BOTH, active="kb", index_key=INDEX_2)
    assert rotated.code == 0, rotated.stdout + rotated.stderr
    assert set(rotated.collections) == {
        ("identity", "identifiers"),
        ("profile", "profiles"),
        ("profile", "timeline"),
        ("profile", "groups"),
        ("profile", "privacy_requests"),
    }
    assert [c["rotated"] for c in rotated.collections.values()] == [3, 6, 2, 1, 2]
    assert all(c["left"] == 0 and c["unreadable"] == 0 for c in rotated.collections.values())
    assert rotated.summary["left"] == 0
    assert rotated.summary["old_keys_may_be_dropped"] is True
    assert rotated.summary["old_key_ids"] == ["ka"]
    assert "may now be dropped" in rotated.summary["message"]

    after = await world.documents()
    again = world.run(ROTATE, keys=BOTH, active="kb", index_key=INDEX_2)
    assert again.code == 0, again.stdout + again.stderr
    assert all(c["rotated"] == 0 for c in again.collections.values())
    assert await world.documents() == after  # nothing rewritten

    dropped = world.run([*ROTATE, "--check"], keys=ONLY_B, active="kb", index_key=INDEX_2)
    assert dropped.code == 0, dropped.stdout + dropped.stderr
    assert dropped.summary["left"] == 0
    assert dropped.summary["unreadable"] == 0
    assert dropped.summary["old_key_ids"] == []


async def test_dropping_the_old_key_too_early_is_reported_not_lost(world: World) -> None:
    early = world.run(ROTATE, keys=ONLY_B, active="kb", index_key=INDEX_1)
    assert early.code == 1
    summary = early.summary
    assert summary["unreadable"] == summary["left"] > 0
    assert summary["left_by_key"] == {"ka": summary["left"]}
    assert "add key(s) ka back" in summary["message"]
    assert all(c["rotated"] == 0 for c in early.collections.values())
    # The values stay as they were: with key A back in the ring, the rotation completes.
    done = world.run(ROTATE, keys=BOTH, active="kb", index_key=INDEX_1)
    assert done.code == 0, done.stdout + done.stderr
    assert done.summary["left"] == 0


async def test_a_bad_command_line_or_configuration_exits_2(world: World) -> None:
    usage = world.run([*ROTATE, "--bogus"], keys=BOTH, active="kb", index_key=INDEX_2)
    assert usage.code == 2
    assert "--bogus" in usage.stderr
    config = world.run(ROTATE, keys=BOTH, active="kc", index_key=INDEX_2)
    assert config.code == 2
    assert "LODESTAR_PII_ACTIVE_KEY_ID" in config.stderr or "active key" in config.stderr
    assert "Traceback" not in usage.stderr + config.stderr
    assert KEY_A not in usage.stderr + config.stderr


async def test_an_unreachable_database_is_one_line_and_a_failure(world: World) -> None:
    world.uri = "mongodb://127.0.0.1:1"
    down = world.run(ROTATE, keys=BOTH, active="kb", index_key=INDEX_2)
    assert down.code == 1
    assert "MongoDB failed" in down.stderr
    assert "Traceback" not in down.stderr


async def test_a_value_rewritten_during_rotation_is_kept_and_reported(
    client: AsyncIOMotorClient[Document], mongo_server: MongoWireServer
) -> None:
    from pymongo import MongoClient

    from services.platform.rotation import Tally
    from services.profile.store import rotate_values

    old = cipher(ring(("ka", KEY_A)), "ka", INDEX_1)
    both = cipher(BOTH, "kb", INDEX_1)
    timeline = database(client, unique("rot").replace("-", "_"), "profile")["timeline"]
    await timeline.insert_one(
        {"_id": "e1", "pii": old.encrypt('{"name": "Ada"}', "timeline").to_document()}
    )
    newer = old.encrypt('{"name": "Ada L."}', "timeline").to_document()
    writer: MongoClient[Document] = MongoClient(mongo_server.uri)

    def fields_while_the_service_writes(doc: Document) -> Any:
        # The profile service (still on the old settings) stores a newer value right after
        # the rotation read this one.
        if doc["pii"]["ct"] != newer["ct"]:
            writer[timeline.database.name]["timeline"].update_one(
                {"_id": "e1"}, {"$set": {"pii": newer}}
            )
        yield "pii", doc["pii"], "timeline"

    try:
        tally = await rotate_values(
            timeline,
            Tally("profile", "timeline"),
            both,
            fields_while_the_service_writes,
            check_only=False,
        )
    finally:
        writer.close()
    assert (tally.rotated, tally.left, tally.left_by_key) == (0, 1, {"ka": 1})
    stored = await timeline.find_one({"_id": "e1"})
    assert stored is not None
    assert both.decrypt(EncryptedValue.from_document(stored["pii"]), "timeline") == (
        '{"name": "Ada L."}'
    )
    again = await rotate_values(
        timeline,
        Tally("profile", "timeline"),
        both,
        lambda d: [("pii", d["pii"], "timeline")],
        check_only=False,
    )
    assert (again.rotated, again.left) == (1, 0)
