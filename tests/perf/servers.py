"""Private SecantusDB and Tansu servers on free ports for one benchmark run, and the
``--mongo-mode`` option of the per-stage benches (how the MongoDB-wire server runs)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from infra.local.servers import KafkaWireServer, MongoWireServer, free_port

# A per-stage bench has one database: one server, advertised as a replica set or standalone.
MONGO_MODES = ("replset", "standalone")


def mongo_modes(text: str) -> list[str]:
    """``--mongo-mode``: one mode or several, comma-separated, run in turn in one invocation."""
    modes = [part.strip() for part in text.split(",") if part.strip()]
    if not modes or any(mode not in MONGO_MODES for mode in modes):
        raise argparse.ArgumentTypeError(f"each must be one of {', '.join(MONGO_MODES)}")
    return modes


def each_mode(
    modes: Sequence[str],
    rounds: int,
    run: dict[str, object],
    measure: Callable[[str], None],
) -> None:
    """``measure`` every mode in turn, ``rounds`` times, with the mode and round in ``run``
    (the bench prints them on every line)."""
    for round_ in range(1, rounds + 1):
        for mode in modes:
            run.update({"mongo_mode": mode, "round": round_})
            measure(mode)


@contextmanager
def private_servers(
    mongo_mode: str = "standalone",
) -> Iterator[tuple[MongoWireServer, KafkaWireServer]]:
    """Start both servers (logs in a temporary folder); stop them however the run ends."""
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-") as logs:
        mongo = MongoWireServer(free_port(), Path(logs), standalone=mongo_mode != "replset")
        kafka = KafkaWireServer(free_port(), Path(logs))
        mongo.start()
        kafka.start()
        try:
            yield mongo, kafka
        finally:
            kafka.stop()
            mongo.stop()
