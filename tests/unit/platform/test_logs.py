"""JsonFormatter: one JSON object per record, extra fields merged, exceptions under ``exc``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.platform.logs import JsonFormatter, configure_logging


def fail() -> None:
    raise ValueError("boom")


def make_record(
    msg: str = "hello %s",
    args: tuple[Any, ...] = ("world",),
    level: int = logging.INFO,
    fields: Any = None,
    exc: bool = False,
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            fail()
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("lodestar.test", level, __file__, 1, msg, args, exc_info)
    if fields is not None:
        record.fields = fields
    return record


def render(record: logging.LogRecord, service: str = "profile") -> dict[str, Any]:
    line = JsonFormatter(service).format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_base_fields() -> None:
    entry = render(make_record(level=logging.WARNING))
    assert entry["level"] == "WARNING"
    assert entry["service"] == "profile"
    assert entry["logger"] == "lodestar.test"
    assert entry["msg"] == "hello world"
    assert "exc" not in entry
    stamp = datetime.fromisoformat(entry["ts"])
    assert stamp.utcoffset() == timedelta(0)


def test_extra_fields_are_merged_at_top_level() -> None:
    entry = render(make_record(fields={"group": "profile-fold", "attempt": 2, "ok": False}))
    assert entry["group"] == "profile-fold"
    assert entry["attempt"] == 2
    assert entry["ok"] is False
    assert entry["msg"] == "hello world"
    assert "fields" not in entry


def test_fields_that_are_not_a_dict_are_ignored() -> None:
    entry = render(make_record(fields=["not", "a", "dict"]))
    assert "fields" not in entry
    assert entry["msg"] == "hello world"


def test_values_json_cannot_encode_are_stringified() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5)
    entry = render(make_record(fields={"when": when, "raw": b"\x00"}))
    assert entry["when"] == str(when)
    assert entry["raw"] == str(b"\x00")


def test_exception_goes_under_exc() -> None:
    entry = render(make_record(msg="failed", args=(), level=logging.ERROR, exc=True))
    assert entry["msg"] == "failed"
    assert entry["level"] == "ERROR"
    assert "Traceback" in entry["exc"]
    assert "ValueError: boom" in entry["exc"]


def test_message_with_quotes_and_newlines_stays_one_line() -> None:
    line = JsonFormatter("gateway").format(make_record(msg='a "b"\nc', args=()))
    assert line.count("\n") == 0
    assert json.loads(line)["msg"] == 'a "b"\nc'


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kafka_level = logging.getLogger("aiokafka").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(kafka_level)


@pytest.mark.usefixtures("restore_root_logger")
def test_configure_logging_installs_the_json_formatter() -> None:
    configure_logging("wallet", "DEBUG")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    formatter = root.handlers[0].formatter
    assert isinstance(formatter, JsonFormatter)
    assert formatter.service == "wallet"
    assert root.level == logging.DEBUG
    assert logging.getLogger("aiokafka").level == logging.WARNING
