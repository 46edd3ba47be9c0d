"""The local launcher's settings: standalone MongoDB-wire servers, one shared server or one
per database owner (``LODESTAR_LOCAL_MONGO_SERVERS``), replicas per service
(``LODESTAR_LOCAL_REPLICAS``), and which servers may be restarted."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.local.servers import KafkaWireServer, MongoWireServer
from infra.local.stack import (
    DATABASE_OWNERS,
    DEFAULT_MONGO_MODE,
    DEFAULT_MONGO_PORTS,
    SERVICES,
    Stack,
    StackPorts,
    mongo_mode_from,
    replicas_from,
    service_of,
)


def test_the_server_starts_standalone_unless_asked_to_play_a_replica_set(tmp_path: Path) -> None:
    assert "--standalone" in MongoWireServer(1234, tmp_path).command()
    assert "--standalone" not in MongoWireServer(1234, tmp_path, standalone=False).command()


def test_a_labelled_server_logs_to_its_own_file(tmp_path: Path) -> None:
    assert MongoWireServer(1234, tmp_path, label="profile").name == "secantusdb-profile"
    assert MongoWireServer(1234, tmp_path).name == "secantusdb"


def test_the_mode_setting_defaults_and_names_a_bad_value() -> None:
    assert mongo_mode_from({}) == DEFAULT_MONGO_MODE
    assert mongo_mode_from({"LODESTAR_LOCAL_MONGO_SERVERS": "per-service"}) == "per-service"
    with pytest.raises(SystemExit, match=r"LODESTAR_LOCAL_MONGO_SERVERS.*shared, per-service"):
        mongo_mode_from({"LODESTAR_LOCAL_MONGO_SERVERS": "sharded"})


def test_every_database_owner_has_its_own_port_each_overridable() -> None:
    ports = StackPorts.from_env({"LODESTAR_PROFILE_MONGO_PORT": "28000"})
    assert (
        set(ports.mongo_per_service)
        == set(DATABASE_OWNERS)
        == {
            "identity",
            "profile",
            "segmentation",
            "recommendation",
            "wallet",
            "gateway",
        }
    )
    assert ports.mongo_per_service["profile"] == 28000
    assert ports.mongo_per_service["identity"] == DEFAULT_MONGO_PORTS["identity"]
    assert ports.mongo not in ports.mongo_per_service.values()
    free = StackPorts.free()
    assert len(set(free.mongo_per_service.values())) == len(DATABASE_OWNERS)


def test_replicas_are_one_number_or_per_service_and_a_bad_value_is_named() -> None:
    assert replicas_from({}) == dict.fromkeys(SERVICES, 1)
    assert replicas_from({"LODESTAR_LOCAL_REPLICAS": "2"}) == dict.fromkeys(SERVICES, 2)
    assert replicas_from({"LODESTAR_LOCAL_REPLICAS": "profile=3, wallet=2"}) == {
        **dict.fromkeys(SERVICES, 1),
        "profile": 3,
        "wallet": 2,
    }
    for bad in ("0", "99", "profile", "gateway=2", "profile=two"):
        with pytest.raises(SystemExit, match="LODESTAR_LOCAL_REPLICAS"):
            replicas_from({"LODESTAR_LOCAL_REPLICAS": bad})


def test_a_replica_runs_its_service() -> None:
    assert service_of("profile") == "profile"
    assert service_of("profile-2") == "profile"
    assert service_of("fake-apns") == "fake-apns"
    assert service_of("mongodb-profile") == "mongodb-profile"


def test_only_a_server_whose_data_survives_is_restarted(tmp_path: Path) -> None:
    in_memory = Stack.server_child("mongodb", MongoWireServer(1234, tmp_path))
    on_disk = Stack.server_child("mongodb", MongoWireServer(1234, tmp_path, str(tmp_path / "db")))
    broker = Stack.server_child("kafka", KafkaWireServer(1235, tmp_path))
    assert (in_memory.restartable, on_disk.restartable, broker.restartable) == (
        False,
        True,
        False,
    )
    assert "data is gone" in in_memory.fatal_note
