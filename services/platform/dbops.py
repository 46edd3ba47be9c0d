"""Database operations counted per process: a pymongo command listener that tallies commands
and the documents they touched by database, command and collection (never their contents)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pymongo import monitoring

# (database, command, collection)
OpKey = tuple[str, str, str]
# Write commands and the field holding their statements.
_STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}
# Replies that name the documents a write touched: n counts matched-or-upserted for update.
_WRITE_REPLY_COUNTS = ("nInserted", "nMatched", "nUpserted", "nDeleted")


def collection_of(command_name: str, command: Mapping[str, Any]) -> str:
    """The collection a command addresses ('' for database- or server-wide commands)."""
    target = command.get("collection" if command_name == "getMore" else command_name)
    return target if isinstance(target, str) else ""


def statements_of(command_name: str, command: Mapping[str, Any]) -> int:
    """The inserts/updates/deletes a write command carries (0 for other commands)."""
    field = _STATEMENTS.get(command_name)
    if field is None:
        return 0
    statements = command.get(field)
    return len(statements) if isinstance(statements, list) else 0


def _length(value: object) -> int:
    return len(value) if isinstance(value, list) else 0


def _found_and_modified(reply: Mapping[str, Any]) -> int:
    last = reply.get("lastErrorObject")
    if isinstance(last, Mapping) and isinstance(last.get("n"), int):
        return int(last["n"])
    return 0 if reply.get("value") is None else 1


def documents_of(command_name: str, reply: Mapping[str, Any], statements: int) -> int:
    """The documents a succeeded command touched, as its reply tells it: ``n`` of a write
    (``upserted`` when no ``n``; the statements when neither), the batch of a cursor, the
    values of a ``distinct``, one for a ``findAndModify`` that found or upserted one, the
    counts of a client ``bulkWrite`` (its cursor holds per-statement results, not documents)."""
    cursor = reply.get("cursor")
    if command_name == "bulkWrite":
        touched = sum(int(reply.get(name, 0)) for name in _WRITE_REPLY_COUNTS)
    elif isinstance(cursor, Mapping):
        touched = _length(cursor.get("firstBatch", cursor.get("nextBatch")))
    elif command_name == "findAndModify":
        touched = _found_and_modified(reply)
    elif command_name == "distinct":
        touched = _length(reply.get("values"))
    elif isinstance(reply.get("n"), int):
        touched = int(reply["n"])
    elif "upserted" in reply:
        touched = _length(reply["upserted"])
    else:
        touched = statements
    return touched


class OperationCounter(monitoring.CommandListener):
    """Counts every command a client sends (on start) and the documents it touched (on
    success); a dict increment under a lock per event (motor calls from its threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: dict[OpKey, int] = {}
        self._documents: dict[OpKey, int] = {}
        # Commands in flight: what the succeeded event no longer names (the collection).
        self._pending: dict[tuple[Any, int], tuple[OpKey, int]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Count the command; remember its key until its reply."""
        name = event.command_name
        key = (event.database_name, name, collection_of(name, event.command))
        statements = statements_of(name, event.command)
        with self._lock:
            self._operations[key] = self._operations.get(key, 0) + 1
            self._pending[(event.connection_id, event.request_id)] = (key, statements)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Add the documents the reply says the command touched."""
        with self._lock:
            pending = self._pending.pop((event.connection_id, event.request_id), None)
        if pending is None:
            return
        key, statements = pending
        documents = documents_of(event.command_name, event.reply, statements)
        if documents:
            with self._lock:
                self._documents[key] = self._documents.get(key, 0) + documents

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A failed command touched nothing we can count; forget it."""
        with self._lock:
            self._pending.pop((event.connection_id, event.request_id), None)

    def snapshot(self) -> tuple[dict[OpKey, int], dict[OpKey, int]]:
        """Copies of the operation and document counts so far."""
        with self._lock:
            return dict(self._operations), dict(self._documents)


# The process's one counter: every client made by ``mongo_client`` reports to it.
DB_OPERATIONS = OperationCounter()
