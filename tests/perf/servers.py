"""Private SecantusDB and Tansu servers on free ports for one benchmark run."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.local.servers import KafkaWireServer, MongoWireServer, free_port


@contextmanager
def private_servers() -> Iterator[tuple[MongoWireServer, KafkaWireServer]]:
    """Start both servers (logs in a temporary folder); stop them however the run ends."""
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-") as logs:
        mongo = MongoWireServer(free_port(), Path(logs))
        kafka = KafkaWireServer(free_port(), Path(logs))
        mongo.start()
        kafka.start()
        try:
            yield mongo, kafka
        finally:
            kafka.stop()
            mongo.stop()
