"""What the stack's processes spend over a measured window: each process's CPU from
``/proc/<pid>/stat`` (utime + stime) and each service's database operations and documents
from the ``lodestar_db_*`` counters on its ``/metrics``. Shared by the benchmarks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.local.servers import KafkaWireServer, ManagedProcess, MongoWireServer
from infra.local.stack import SERVICES, Stack

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OPERATIONS = "lodestar_db_operations_total"
DOCUMENTS = "lodestar_db_documents_total"
# Bus activity: messages counted when handled, batches when committed.
BUS_ACTIVITY = ("lodestar_bus_consumed_total", "lodestar_bus_batch_seconds_count")
# (command, "database.collection") -> count
DbCounts = dict[tuple[str, str], float]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return int(fields[11]) + int(fields[12])


def pid_of(process: ManagedProcess) -> int:
    """The pid of a started process."""
    assert process.process is not None
    return process.process.pid


def _wire_servers(stack: Stack) -> dict[str, ManagedProcess]:
    """Every MongoDB-wire server (one shared, or one per database owner) and the Kafka-wire
    server the stack started, by name."""
    servers: dict[str, MongoWireServer | KafkaWireServer | None] = {
        **stack.mongo_processes(),
        "kafka": stack.kafka,
    }
    return {
        name: server.process
        for name, server in servers.items()
        if server is not None and server.process is not None
    }


def stack_pids(stack: Stack) -> dict[str, int]:
    """Every process of the stack by name: the gateway, the services, the stand-ins, and the
    MongoDB-wire and Kafka-wire servers it started."""
    pids = {name: pid_of(p) for name, p in stack.processes.items()}
    pids.update({name: pid_of(p) for name, p in _wire_servers(stack).items()})
    return pids


def metrics_endpoints(stack: Stack) -> dict[str, tuple[str, dict[str, str]]]:
    """Where each process that counts database operations serves ``/metrics``, with the
    headers its token asks (the gateway serves them on its HTTP port)."""
    endpoints = {}
    for name in ("gateway", *SERVICES):
        if name not in stack.processes:
            continue
        token = stack.env_for(name).get("LODESTAR_METRICS_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if name == "gateway":
            url = f"{stack.gateway_url}/metrics"
        else:
            url = f"http://127.0.0.1:{stack.ports.metrics[name]}/metrics"
        endpoints[name] = (url, headers)
    return endpoints


def parse_counts(text: str) -> tuple[DbCounts, DbCounts, float]:
    """Operations and documents by (command, database.collection) from a /metrics text, and
    the process's bus activity (messages handled plus batches committed)."""
    operations: DbCounts = {}
    documents: DbCounts = {}
    consumed = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in BUS_ACTIVITY:
                consumed += sample.value
            target = {OPERATIONS: operations, DOCUMENTS: documents}.get(sample.name)
            if target is None:
                continue
            labels = sample.labels
            where = f"{labels['database']}.{labels['collection']}".rstrip(".")
            key = (labels["command"], where)
            target[key] = target.get(key, 0.0) + sample.value
    return operations, documents, consumed


@dataclass(frozen=True)
class Snapshot:
    """The counters at one moment (``at``, perf_counter seconds): CPU ticks per process; db
    counts and bus activity per process that serves metrics."""

    ticks: dict[str, int]
    operations: dict[str, DbCounts]
    documents: dict[str, DbCounts]
    bus: dict[str, float]
    at: float

    def bus_quiet_since(self, earlier: Snapshot) -> bool:
        """Whether no process handled a message or committed a batch in between (database
        commands go on without events: the wallet's polls, for one)."""
        return self.bus == earlier.bus


async def snapshot(stack: Stack, http: httpx.AsyncClient) -> Snapshot:
    """CPU of every process, then every /metrics (the scrape's own CPU lands in the window)."""
    ticks = {name: cpu_ticks(pid) for name, pid in stack_pids(stack).items()}
    operations: dict[str, DbCounts] = {}
    documents: dict[str, DbCounts] = {}
    bus: dict[str, float] = {}
    at = time.perf_counter()
    for name, (url, headers) in metrics_endpoints(stack).items():
        response = await http.get(url, headers=headers)
        response.raise_for_status()
        operations[name], documents[name], bus[name] = parse_counts(response.text)
    return Snapshot(ticks, operations, documents, bus, at)


def _delta(after: DbCounts, before: DbCounts) -> DbCounts:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def cost_rows(
    before: Snapshot, after: Snapshot, events: int, seconds: float
) -> list[dict[str, Any]]:
    """One record per process (CPU ms per 1,000 events), one per process that talks to the
    database (operations and documents per event, in total and per command and collection),
    then the compact table line."""
    rows: list[dict[str, Any]] = []
    cpu: dict[str, float] = {}
    for name, ticks in after.ticks.items():
        spent_ms = (ticks - before.ticks.get(name, ticks)) * 1000 / CLOCK_TICKS
        cpu[name] = round(spent_ms / events * 1000, 1)
        record = {
            "metric": "cpu_ms_per_1000_events",
            "process": name,
            "value": cpu[name],
            "cpu_s": round(spent_ms / 1000, 2),
            "cores_used": round(spent_ms / 1000 / seconds, 2),
        }
        rows.append({**record, "events": events, "seconds": round(seconds, 2)})
    ops_total: dict[str, float] = {}
    docs_total: dict[str, float] = {}
    for name, counts in after.operations.items():
        ops = _delta(counts, before.operations.get(name, {}))
        docs = _delta(after.documents[name], before.documents.get(name, {}))
        ops_total[name] = round(sum(ops.values()) / events, 3)
        docs_total[name] = round(sum(docs.values()) / events, 3)
        by_operation = {
            f"{command} {where}": {
                "ops": round(ops.get((command, where), 0.0) / events, 4),
                "docs": round(docs.get((command, where), 0.0) / events, 4),
            }
            for command, where in sorted(ops.keys() | docs.keys())
        }
        rows.append(
            {
                "metric": "db_per_event",
                "service": name,
                "operations": ops_total[name],
                "documents": docs_total[name],
                "by_operation": by_operation,
                "events": events,
            }
        )
    rows.append(
        {
            "metric": "cost_table",
            "events": events,
            "seconds": round(seconds, 2),
            "cpu_ms_per_1000_events": cpu,
            "db_operations_per_event": ops_total,
            "db_documents_per_event": docs_total,
        }
    )
    return rows
