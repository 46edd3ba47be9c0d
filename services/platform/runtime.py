"""Running a service process: settings, logging, metrics, and shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from services.platform.bus import Subscription
from services.platform.logs import configure_logging
from services.platform.metrics import serve_metrics
from services.platform.rpc import GrpcServer
from services.platform.settings import CommonSettings, SettingsT, load_settings

log = logging.getLogger(__name__)


def shutdown_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (Kubernetes stops pods with SIGTERM)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


async def until_shutdown_or_failure(
    stop: asyncio.Event, tasks: Iterable[asyncio.Task[None]]
) -> None:
    """Wait for a shutdown signal, or re-raise if a background task (a consumer) dies,
    so the process exits non-zero and its supervisor restarts it."""
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    for task in done:
        if task is not waiter:
            task.result()
            raise RuntimeError(f"background task {task.get_name()} ended unexpectedly")


async def serve_until_shutdown(
    server: GrpcServer,
    subscriptions: Sequence[Subscription[Any]] = (),
    cleanup: Sequence[Callable[[], Awaitable[object] | None]] = (),
    periodic: Sequence[tuple[float, Callable[[], Awaitable[object]]]] = (),
    background: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = (),
) -> None:
    """Start the gRPC server, the consumers, the ``(interval_s, job)`` periodic jobs and the
    ``(name, loop)`` background loops (supervised like consumers: one that ends stops the
    process); on SIGTERM stop the jobs, drain the consumers (each commits its last batch),
    let in-flight calls finish, then run ``cleanup`` in order."""
    stop = shutdown_event()
    await server.start()
    tasks = [asyncio.create_task(s.run(), name=f"consumer-{s.group}") for s in subscriptions]
    loops = [asyncio.create_task(loop(), name=name) for name, loop in background]
    jobs = [asyncio.create_task(every(interval, job)) for interval, job in periodic]
    try:
        await until_shutdown_or_failure(stop, [*tasks, *loops])
    finally:
        for job_task in [*jobs, *loops]:
            job_task.cancel()
        for subscription in subscriptions:
            await subscription.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await server.stop()
        for close in cleanup:
            result = close()
            if inspect.isawaitable(result):
                await result


async def every(interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
    """Run ``job`` every ``interval_s`` seconds; a failure is logged and retried next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except Exception:
            log.exception("periodic job failed", extra={"fields": {"job": repr(job)}})


def run_service(
    name: str,
    settings_type: type[SettingsT],
    serve: Callable[[SettingsT], Coroutine[Any, Any, None]],
) -> None:
    """The body of every ``__main__``: load settings (or exit naming the bad one), then serve."""
    settings = load_settings(settings_type)
    if isinstance(settings, CommonSettings):
        configure_logging(name, settings.log_level)
        serve_metrics(settings.metrics_port, settings.metrics_host, settings.metrics_token_value())
    asyncio.run(serve(settings))
