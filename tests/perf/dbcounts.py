"""Database operations and documents per unit of work (event, change) for the stage
benchmarks, from the same command listener the services carry (``services.platform.dbops``)
on the bench's own client."""

from __future__ import annotations

from services.platform.dbops import OperationCounter, OpKey


def _since(now: dict[OpKey, int], before: dict[OpKey, int]) -> dict[OpKey, int]:
    return {key: n - before.get(key, 0) for key, n in now.items() if n != before.get(key, 0)}


class Window:
    """What a counter saw between :meth:`start` and :meth:`per`, for one database."""

    def __init__(self, counter: OperationCounter, database: str) -> None:
        self.counter = counter
        self.database = database
        self._operations: dict[OpKey, int] = {}
        self._documents: dict[OpKey, int] = {}

    def start(self) -> None:
        """Count from now on."""
        self._operations, self._documents = self.counter.snapshot()

    def per(self, units: int, unit: str) -> dict[str, object]:
        """Operations and documents per ``unit`` since :meth:`start`, in total, and the
        counts by ``command collection`` (handshakes aside)."""
        operations, documents = self.counter.snapshot()
        ops = _since(operations, self._operations)
        docs = _since(documents, self._documents)
        keys = sorted(
            k
            for k in set(ops) | set(docs)
            if k[0] == self.database and k[1] not in ("hello", "isMaster", "endSessions")
        )
        return {
            f"db_operations_per_{unit}": round(sum(ops.get(k, 0) for k in keys) / units, 4),
            f"db_documents_per_{unit}": round(sum(docs.get(k, 0) for k in keys) / units, 4),
            "db_counts": {
                f"{k[1]} {k[2]}".strip(): {
                    "operations": ops.get(k, 0),
                    "documents": docs.get(k, 0),
                }
                for k in keys
            },
        }
