"""The command listener every store client carries, against the real SecantusDB server: a
known sequence of operations gives the counts expected, scraped as Prometheus would."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infra.local.servers import MongoWireServer
from services.platform import metrics  # noqa: F401 (importing it registers the collector)
from services.platform.mongo import mongo_client
from tests.support.kafka import unique


def scraped(database: str) -> dict[tuple[str, str, str], float]:
    """The db counters of this process's /metrics text for one database, by (family,
    command, collection)."""
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.labels.get("database") == database:
                key = (sample.name, sample.labels["command"], sample.labels["collection"])
                counts[key] = sample.value
    return counts


async def test_a_known_sequence_gives_the_expected_counts(mongo_server: MongoWireServer) -> None:
    name = unique("dbops").replace("-", "_")
    client = mongo_client(mongo_server.uri, "tests")
    try:
        people = client[name]["people"]
        await people.insert_many([{"_id": i, "email": f"p{i}@example.com"} for i in range(3)])
        await people.update_one({"_id": 1}, {"$set": {"plan": "gold"}})
        found = await people.find({"_id": {"$in": [0, 2]}}).to_list(None)
    finally:
        client.close()
    assert len(found) == 2
    counts = scraped(name)
    assert counts == {
        ("lodestar_db_operations_total", "insert", "people"): 1,
        ("lodestar_db_documents_total", "insert", "people"): 3,
        ("lodestar_db_operations_total", "update", "people"): 1,
        ("lodestar_db_documents_total", "update", "people"): 1,
        ("lodestar_db_operations_total", "find", "people"): 1,
        ("lodestar_db_documents_total", "find", "people"): 2,
    }
