"""Bus fetch-wait benchmark (``make bench``): what ``LODESTAR_KAFKA_FETCH_MAX_WAIT_MS`` costs
on the local Kafka-wire server, side by side in one run.

For each wait (alternating over ``--rounds``):
- delivery latency: one record produced at a random moment, then consumed by a group-less
  consumer that was already waiting; p50/p90/max over ``--records``. A broker that answers a
  waiting fetch as soon as data arrives (Apache Kafka) shows a few ms whatever the wait; one
  that holds the fetch for the whole wait shows about half the wait;
- idle cost: ``--consumers`` consumers polling empty topics for ``--idle-s``; the broker's CPU
  milliseconds per second (from ``/proc/<pid>/stat``).

Prints JSON lines with the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.costs import CLOCK_TICKS, cpu_ticks, pid_of
from tests.perf.servers import private_servers


def emit(record: dict[str, object]) -> None:
    """One JSON line with the core count."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


async def latency(bootstrap: str, wait_ms: int, records: int) -> list[float]:
    """Milliseconds from produce to consume, one record at a time at random moments."""
    topic = f"bench-wait-{wait_ms}-{random.randrange(10**9)}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=wait_ms,
    )
    try:
        await producer.send_and_wait(topic, b"warm-up")
        await consumer.start()
        await consumer.getone()
        seen = []
        for _ in range(records):
            # The consumer is mid-wait when the record arrives, at a random point of it.
            await asyncio.sleep(random.uniform(0.05, 0.3))
            sent = time.perf_counter()
            await producer.send_and_wait(topic, b"x")
            await consumer.getone()
            seen.append((time.perf_counter() - sent) * 1000)
        return seen
    finally:
        await consumer.stop()
        await producer.stop()


async def idle_cpu_ms_per_s(
    bootstrap: str, broker_pid: int, wait_ms: int, consumers: int, seconds: float
) -> float:
    """The broker's CPU per second while ``consumers`` group-less consumers poll empty topics."""
    group = []
    for n in range(consumers):
        topic = f"bench-idle-{wait_ms}-{n}-{random.randrange(10**9)}"
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=wait_ms
        )
        await consumer.start()
        group.append(consumer)
    tasks = [asyncio.create_task(c.getmany(timeout_ms=int(seconds * 2000))) for c in group]
    try:
        await asyncio.sleep(1.0)  # past the first metadata round trips
        before = cpu_ticks(broker_pid)
        await asyncio.sleep(seconds)
        spent = cpu_ticks(broker_pid) - before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in group:
            await consumer.stop()
    return spent * 1000 / CLOCK_TICKS / seconds


def main() -> None:
    """Start a private Kafka-wire server, compare the waits, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", default="50,500", help="fetch max waits in ms, comma-separated")
    parser.add_argument("--records", type=int, default=30)
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    waits = [int(w) for w in args.waits.split(",") if w.strip()]
    with private_servers() as (_, kafka):
        assert kafka.process is not None
        broker = pid_of(kafka.process)
        for round_ in range(1, args.rounds + 1):
            for wait in waits:
                seen = sorted(asyncio.run(latency(kafka.bootstrap_servers, wait, args.records)))
                idle = asyncio.run(
                    idle_cpu_ms_per_s(
                        kafka.bootstrap_servers, broker, wait, args.consumers, args.idle_s
                    )
                )
                emit(
                    {
                        "metric": "bus_fetch_wait",
                        "fetch_max_wait_ms": wait,
                        "round": round_,
                        "delivery_ms_p50": round(statistics.median(seen), 1),
                        "delivery_ms_p90": round(seen[int(0.9 * (len(seen) - 1))], 1),
                        "delivery_ms_max": round(seen[-1], 1),
                        "records": len(seen),
                        "idle_broker_cpu_ms_per_s": round(idle, 1),
                        "idle_consumers": args.consumers,
                    }
                )


if __name__ == "__main__":
    main()
