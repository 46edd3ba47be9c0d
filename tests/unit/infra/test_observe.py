"""The launcher's observer: the consumer lag a process's ``/metrics`` reports (behind the
metrics token), the last error of its log during this run, and how a look lands in a row."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from infra.local.observe import (
    MAX_ERROR,
    NOT_READY,
    READY,
    Observer,
    Probe,
    consumer_lag,
    last_error,
    scrape_lag,
)
from infra.local.stack import Stack
from infra.local.supervisor import ProcessStatus
from services.platform.metrics import _guarded, _QuietHandler

TOKEN = "metrics-token-0123456789"


def lag_registry(values: dict[tuple[str, str, str], float]) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge(
        "lodestar_consumer_lag", "lag", ["group", "topic", "partition"], registry=registry
    )
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    Counter("lodestar_bus_consumed_total", "other", ["topic"], registry=registry).labels("t").inc(5)
    return registry


def test_the_lag_is_summed_over_every_partition() -> None:
    page = generate_latest(
        lag_registry({("g", "t", "0"): 3, ("g", "t", "1"): 0, ("h", "u", "5"): 11})
    ).decode()
    assert consumer_lag(page) == 14


def test_no_lag_gauge_is_no_lag_rather_than_zero() -> None:
    assert consumer_lag(generate_latest(lag_registry({})).decode()) is None
    assert consumer_lag("") is None


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """A ``/metrics`` door like the services' (behind the token) reporting a lag of 9."""
    app = _guarded(make_wsgi_app(lag_registry({("g", "t", "0"): 4, ("g", "t", "1"): 5})), TOKEN)
    server = make_server("127.0.0.1", 0, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_the_lag_is_scraped_with_the_metrics_token(metrics_url: str) -> None:
    assert scrape_lag(metrics_url, TOKEN, timeout_s=10) == 9
    # Refused without it: no figure rather than a wrong one.
    assert scrape_lag(metrics_url, None, timeout_s=10) is None
    assert scrape_lag("http://127.0.0.1:9/metrics", TOKEN, timeout_s=2) is None


def json_line(level: str, msg: str, **fields: str) -> str:
    entry = {"ts": "2026-12-03T12:34:56.789+00:00", "level": level, "msg": msg, **fields}
    return json.dumps(entry) + "\n"


def test_the_last_error_is_the_newest_error_line(tmp_path: Path) -> None:
    log = tmp_path / "identity.log"
    log.write_text(
        json_line("ERROR", "message dead-lettered", reason="ValueError: bad")
        + json_line("INFO", "identity race lost, resolving again")
        + json_line("ERROR", "unhandled error", method="/x")
        + json_line("WARNING", "handler failed, retrying")
    )
    # The JSON logs' message only, with its time (fields may say more than a table should).
    assert last_error(log) == "12:34:56 unhandled error"


def test_errors_of_an_earlier_run_are_not_this_runs(tmp_path: Path) -> None:
    log = tmp_path / "profile.log"
    log.write_text(json_line("ERROR", "from yesterday"))
    before = log.stat().st_size
    with log.open("a") as handle:
        handle.write(json_line("INFO", "started"))
    assert last_error(log, before) == ""
    assert last_error(log, 0) == "12:34:56 from yesterday"
    assert last_error(tmp_path / "missing.log") == ""
    assert last_error(None) == ""


def test_a_plain_error_line_is_shown_shortened(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    noisy = "2026-12-03T12:00:00Z ERROR tansu_broker: connection reset " + "x" * 200
    log.write_text("2026-12-03T11:59:00Z INFO tansu_broker: ready\n" + noisy + "\n")
    shown = last_error(log)
    assert shown.startswith("2026-12-03T12:00:00Z ERROR tansu_broker")
    assert len(shown) == MAX_ERROR
    assert shown.endswith("...")


def test_only_the_tail_of_a_long_log_is_read(tmp_path: Path) -> None:
    log = tmp_path / "wallet.log"
    log.write_text(json_line("ERROR", "long ago") + json_line("INFO", "x" * 500) * 20)
    assert last_error(log, tail_bytes=2000) == ""
    assert last_error(log) == "12:34:56 long ago"


def test_the_observer_looks_at_every_process(tmp_path: Path, metrics_url: str) -> None:
    log = tmp_path / "segmentation.log"
    log.write_text(json_line("ERROR", "periodic job failed"))

    def broken() -> bool:
        raise ConnectionError("refused")

    probes = [
        Probe("segmentation", lambda: True, metrics_url, log),
        Probe("kafka", broken, None, None),
    ]
    observer = Observer(lambda: probes, TOKEN, interval_s=60)
    assert observer.get("segmentation") is None
    observer.observe_all()
    seen = observer.get("segmentation")
    assert seen is not None
    assert (seen.health, seen.consumer_lag, seen.last_error) == (
        READY,
        9,
        "12:34:56 periodic job failed",
    )
    kafka = observer.get("kafka")
    assert kafka is not None
    assert (kafka.health, kafka.consumer_lag, kafka.last_error) == (NOT_READY, None, "")


def test_a_process_that_is_down_shows_no_health_but_keeps_its_last_error(
    tmp_path: Path,
) -> None:
    log = tmp_path / "wallet.log"
    log.write_text(json_line("ERROR", "push failed"))
    observer = Observer(lambda: [Probe("wallet", lambda: True, None, log)], None, 60)
    observer.observe_all()
    up = ProcessStatus("wallet", "service", 11, "running", 0, 0, "", 0.0)
    down = ProcessStatus("wallet", "service", None, "backing off", 1, 1, "signal SIGKILL", 1.0)
    assert Stack._observed(up, observer).health == READY
    assert Stack._observed(up, observer).last_error == "12:34:56 push failed"
    gone = Stack._observed(down, observer)
    assert (gone.health, gone.consumer_lag, gone.last_error) == ("-", None, "12:34:56 push failed")
