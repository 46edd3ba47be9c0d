"""JSON structured logging: one object per line, extra fields under ``fields``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from services.platform.tracing import log_ids


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line a log pipeline can index."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render the record; ``extra={"fields": {...}}`` is merged in."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # The active span's trace_id and span_id, to find the line from a trace and back.
        entry.update(log_ids())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep third-party loggers at WARNING: aiokafka logs every rebalance step at INFO and
    whole message payloads (customer PII) at DEBUG; httpx logs every request URL at INFO,
    and an APNs URL holds the device's push token."""
    for name in (
        "aiokafka",
        "kafka",
        "pymongo",
        "grpc",
        "asyncio",
        "httpx",
        "httpcore",
        "h2",
        "hpack",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
