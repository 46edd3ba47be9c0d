"""The command listener's counting, fed pymongo's own command events with replies of each
shape; and its export on the Prometheus registry without any document content."""

from __future__ import annotations

import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from pymongo import monitoring

from services.platform.dbops import OperationCounter
from services.platform.metrics import DbOperationsCollector

ADDRESS = ("127.0.0.1", 27017)
DB = "lodestar_profile"


class Driver:
    """Sends started/succeeded/failed events to a listener as pymongo would."""

    def __init__(self, listener: OperationCounter) -> None:
        self.listener = listener
        self.request_id = 0

    def start(self, command: dict[str, Any], database: str = DB) -> int:
        self.request_id += 1
        self.listener.started(
            monitoring.CommandStartedEvent(command, database, self.request_id, ADDRESS, None)
        )
        return self.request_id

    def succeed(self, request_id: int, name: str, reply: dict[str, Any]) -> None:
        self.listener.succeeded(
            monitoring.CommandSucceededEvent(
                datetime.timedelta(milliseconds=1), reply, name, request_id, ADDRESS, None
            )
        )

    def fail(self, request_id: int, name: str) -> None:
        self.listener.failed(
            monitoring.CommandFailedEvent(
                datetime.timedelta(milliseconds=1), {"ok": 0}, name, request_id, ADDRESS, None
            )
        )

    def run(self, command: dict[str, Any], reply: dict[str, Any], database: str = DB) -> None:
        self.succeed(self.start(command, database), next(iter(command)), {"ok": 1, **reply})


def test_each_reply_shape_is_counted() -> None:
    listener = OperationCounter()
    driver = Driver(listener)
    docs = [{"_id": i, "email": f"p{i}@example.com"} for i in range(3)]
    driver.run({"insert": "events", "ordered": True, "documents": docs}, {"n": 3})
    updates = [{"q": {"_id": i}, "u": {"$inc": {"n": 1}}, "upsert": True} for i in range(4)]
    # Two matched (one modified), two upserted: n counts matched plus upserted.
    upserted = [{"index": 2, "_id": 2}, {"index": 3, "_id": 3}]
    driver.run(
        {"update": "profiles", "updates": updates}, {"n": 4, "nModified": 1, "upserted": upserted}
    )
    deletes = [{"q": {"_id": 1}, "limit": 1}, {"q": {"_id": 9}, "limit": 1}]
    driver.run({"delete": "profiles", "deletes": deletes}, {"n": 1})
    # A write reply without n: the upserted list, then the statements sent.
    driver.run({"update": "profiles", "updates": updates[:2]}, {"upserted": upserted[:1]})
    driver.run({"insert": "events", "documents": docs[:2]}, {})
    find_reply = {"cursor": {"id": 7, "ns": f"{DB}.profiles", "firstBatch": [{}, {}]}}
    driver.run({"find": "profiles", "filter": {"_id": {"$in": [1, 2]}}}, find_reply)
    more_reply = {"cursor": {"id": 0, "ns": f"{DB}.profiles", "nextBatch": [{}, {}, {}]}}
    driver.run({"getMore": 7, "collection": "profiles", "batchSize": 100}, more_reply)
    agg_reply = {"cursor": {"id": 0, "ns": f"{DB}.events", "firstBatch": [{"n": 5}]}}
    driver.run({"aggregate": "events", "pipeline": [], "cursor": {}}, agg_reply)
    driver.run(
        {"findAndModify": "profiles", "query": {"_id": 1}, "update": {"$set": {"a": 1}}},
        {"lastErrorObject": {"n": 1, "updatedExisting": True}, "value": {"_id": 1}},
    )
    driver.run({"findAndModify": "profiles", "query": {"_id": 5}, "remove": True}, {"value": None})
    driver.run({"distinct": "events", "key": "type"}, {"values": ["a", "b"]})
    driver.run({"createIndexes": "events", "indexes": []}, {"numIndexesAfter": 2})
    driver.run({"ping": 1}, {}, database="admin")
    bulk_reply = {"nInserted": 2, "nMatched": 1, "nUpserted": 1, "nDeleted": 0, "cursor": {}}
    bulk = {"bulkWrite": 1, "ops": [], "nsInfo": [{"ns": f"{DB}.events"}]}
    driver.run(bulk, {**bulk_reply, "cursor": {"id": 0, "firstBatch": [{}, {}, {}, {}]}}, "admin")

    operations, documents = listener.snapshot()
    assert operations == {
        (DB, "insert", "events"): 2,
        (DB, "update", "profiles"): 2,
        (DB, "delete", "profiles"): 1,
        (DB, "find", "profiles"): 1,
        (DB, "getMore", "profiles"): 1,
        (DB, "aggregate", "events"): 1,
        (DB, "findAndModify", "profiles"): 2,
        (DB, "distinct", "events"): 1,
        (DB, "createIndexes", "events"): 1,
        ("admin", "ping", ""): 1,
        ("admin", "bulkWrite", ""): 1,
    }
    assert documents == {
        (DB, "insert", "events"): 3 + 2,
        (DB, "update", "profiles"): 4 + 1,
        (DB, "delete", "profiles"): 1,
        (DB, "find", "profiles"): 2,
        (DB, "getMore", "profiles"): 3,
        (DB, "aggregate", "events"): 1,
        (DB, "findAndModify", "profiles"): 1,
        (DB, "distinct", "events"): 2,
        ("admin", "bulkWrite", ""): 4,
    }


def test_a_failed_command_counts_as_sent_and_touches_nothing() -> None:
    listener = OperationCounter()
    driver = Driver(listener)
    request = driver.start({"update": "profiles", "updates": [{"q": {}, "u": {}}]})
    driver.fail(request, "update")
    # A reply for a request already forgotten (or never started) is ignored.
    driver.succeed(request, "update", {"ok": 1, "n": 1})
    driver.succeed(999, "find", {"ok": 1, "cursor": {"firstBatch": [{}]}})
    operations, documents = listener.snapshot()
    assert operations == {(DB, "update", "profiles"): 1}
    assert documents == {}


def test_replies_pair_with_their_own_start_when_interleaved() -> None:
    listener = OperationCounter()
    driver = Driver(listener)
    find = driver.start({"find": "profiles", "filter": {}})
    insert = driver.start({"insert": "events", "documents": [{}, {}]})
    driver.succeed(insert, "insert", {"ok": 1, "n": 2})
    driver.succeed(find, "find", {"ok": 1, "cursor": {"id": 0, "firstBatch": [{}]}})
    _, documents = listener.snapshot()
    assert documents == {(DB, "insert", "events"): 2, (DB, "find", "profiles"): 1}


def test_export_names_counts_never_contents() -> None:
    listener = OperationCounter()
    driver = Driver(listener)
    docs = [{"_id": 1, "email": "someone@example.com"}]
    driver.run({"insert": "profiles", "documents": docs}, {"n": 1})
    find_reply = {"cursor": {"id": 0, "firstBatch": [{"email": "someone@example.com"}]}}
    driver.run({"find": "profiles", "filter": {"email": "someone@example.com"}}, find_reply)
    registry = CollectorRegistry()
    registry.register(DbOperationsCollector(listener))
    text = generate_latest(registry).decode()
    labels = f'collection="profiles",command="insert",database="{DB}"'
    assert f"lodestar_db_operations_total{{{labels}}} 1.0" in text
    assert f"lodestar_db_documents_total{{{labels}}} 1.0" in text
    find_labels = f'collection="profiles",command="find",database="{DB}"'
    assert f"lodestar_db_documents_total{{{find_labels}}} 1.0" in text
    assert "example.com" not in text
