"""The local MongoDB-wire server runs standalone: drivers see no replica set, so they send no
retryable-write transaction numbers (the server scanned its whole store of saved replies for
each of them, which made single writes 10-20x dearer)."""

from __future__ import annotations

from pathlib import Path

import pymongo
from pymongo import monitoring

from infra.local.servers import MongoWireServer, free_port
from services.platform.mongo import Document


class WriteCommands(monitoring.CommandListener):
    """The insert/update commands a client sent."""

    def __init__(self) -> None:
        self.commands: list[Document] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in {"insert", "update"}:
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def writes_through(uri: str) -> tuple[Document, list[Document]]:
    """The server's hello reply, and the write commands one insert and one upsert sent."""
    listener = WriteCommands()
    client: pymongo.MongoClient[Document] = pymongo.MongoClient(uri, event_listeners=[listener])
    try:
        hello = client.admin.command("hello")
        collection = client["lodestar_localcheck"]["docs"]
        collection.insert_one({"_id": "a"})
        collection.update_one({"_id": "b"}, {"$inc": {"n": 1}}, upsert=True)
        assert collection.count_documents({}) == 2
        collection.drop()
    finally:
        client.close()
    return hello, listener.commands


def test_the_launched_server_is_standalone_and_writes_carry_no_txn_number(
    mongo_server: MongoWireServer,
) -> None:
    hello, writes = writes_through(mongo_server.uri)
    assert hello.get("isWritablePrimary") is True
    assert "setName" not in hello
    assert len(writes) == 2
    assert all("txnNumber" not in command for command in writes)


def test_the_replica_set_mode_kept_for_comparison_does_send_them(tmp_path: Path) -> None:
    server = MongoWireServer(free_port(), tmp_path, standalone=False)
    server.start()
    try:
        hello, writes = writes_through(server.uri)
    finally:
        server.stop()
    assert hello.get("setName")
    assert len(writes) == 2
    assert all("txnNumber" in command for command in writes)
