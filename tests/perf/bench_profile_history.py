"""Profile history benchmark (``make bench``): what one more event costs the database server
as a customer's history grows.

Each profile document carries the ids of its last ``profile_dedupe_window`` events (1,000
by default: redeliveries are recognised by them) and the times of its last 1,000 activity
events (sessions are counted from them), so an established customer's document is tens of
kilobytes that every update rewrites and every read decodes. The end-to-end benchmark's
customers have 20 events each and never show it.

For each history length (side by side on one private MongoDB-wire server, standalone): 50
customers are given that many page events through the profile store, then one more event
each is applied (one batch, as the consumer does) and the profiles read back (as the
consumer does to announce the change). Prints the server's CPU microseconds per customer
for the update and for the read (from ``/proc/<pid>/stat``), and the document's BSON size,
as JSON lines with the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lodestar.v1 import events_pb2
from services.platform.mongo import database, mongo_client
from services.profile.consumers import to_resolved_event
from services.profile.fold import fold
from services.profile.store import ProfileStore
from tests.perf.costs import CLOCK_TICKS, cpu_ticks, pid_of
from tests.perf.servers import private_servers

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CUSTOMERS = 50
PAGE = events_pb2.EVENT_TYPE_PAGE


def emit(record: dict[str, object]) -> None:
    """One JSON line with the core count."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


def page_event(customer: int, n: int, label: str) -> events_pb2.Event:
    """A page view of ``customer``, the ``n``-th of its history."""
    event = events_pb2.Event(
        event_id=f"{label}-{customer}-{n}",
        customer_id=f"cust-{label}-{customer}",
        type=PAGE,
        name="Home",
        source="bench",
    )
    event.timestamp.FromDatetime(T0 + timedelta(minutes=n, seconds=customer))
    return event


async def measure(mongo_uri: str, server_pid: int, history: int, label: str) -> None:
    """Give every customer ``history`` events, then time one more event each."""
    client = mongo_client(mongo_uri, "bench-history")
    store = ProfileStore(database(client, f"bench_history_{label}", "profile"), 1_000)
    try:
        # The history, in batches of 500 events as the consumer would apply them.
        per_batch = max(1, 500 // CUSTOMERS)
        for start in range(0, history, per_batch):
            batch = [
                fold(to_resolved_event(page_event(c, n, label)))
                for n in range(start, min(history, start + per_batch))
                for c in range(CUSTOMERS)
            ]
            await store.apply(batch)
        ids = [f"cust-{label}-{c}" for c in range(CUSTOMERS)]
        sample = await store.profiles.find_one({"_id": ids[0]})
        size = len(bson.encode(sample)) if sample else 0
        one_more = [
            fold(to_resolved_event(page_event(c, history, label))) for c in range(CUSTOMERS)
        ]
        before = cpu_ticks(server_pid)
        applied = await store.apply(one_more)
        update_us = (cpu_ticks(server_pid) - before) * 1e6 / CLOCK_TICKS / CUSTOMERS
        before = cpu_ticks(server_pid)
        found = await store.get_many(ids)
        read_us = (cpu_ticks(server_pid) - before) * 1e6 / CLOCK_TICKS / CUSTOMERS
        assert applied == CUSTOMERS
        assert len(found) == CUSTOMERS
        emit(
            {
                "metric": "profile_cost_by_history",
                "history_events": history,
                "document_bytes": size,
                "update_server_us_per_customer": round(update_us),
                "read_server_us_per_customer": round(read_us),
                "customers": CUSTOMERS,
            }
        )
    finally:
        client.close()


def main() -> None:
    """Start a private server, measure each history length in turn, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", default="20,250,1000", help="events per customer")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    histories = [int(h) for h in args.histories.split(",") if h.strip()]
    with private_servers() as (mongo, _):
        assert mongo.process is not None
        server = pid_of(mongo.process)
        for round_ in range(1, args.rounds + 1):
            for history in histories:
                asyncio.run(measure(mongo.uri, server, history, f"r{round_}h{history}"))


if __name__ == "__main__":
    main()
