"""The local launcher's MongoDB-wire settings: standalone servers, and one shared server or
one per database owner (``LODESTAR_LOCAL_MONGO_SERVERS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.local.servers import MongoWireServer
from infra.local.stack import (
    DATABASE_OWNERS,
    DEFAULT_MONGO_MODE,
    DEFAULT_MONGO_PORTS,
    StackPorts,
    mongo_mode_from,
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
