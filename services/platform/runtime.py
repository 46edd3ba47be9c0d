"""Running a service process: settings, logging, metrics, and shutdown on SIGTERM/SIGINT.

Kubernetes kills a pod 30 s after SIGTERM, so every shutdown step is bounded (a dead Kafka
or MongoDB makes a drain, a flush or a close wait for its own, much longer, timeouts), and
a watchdog ends the process if the whole still overruns. Cutting a step short loses nothing:
a batch is committed only after its effects, so what was not committed is redelivered.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from services.platform import tracing
from services.platform.bus import Subscription
from services.platform.logs import configure_logging
from services.platform.metrics import serve_metrics
from services.platform.rpc import GrpcServer
from services.platform.settings import CommonSettings, SettingsT, load_settings

log = logging.getLogger(__name__)

# The consumers' time to finish and commit the batch in hand once asked to stop.
DRAIN_S = 5.0
# Each later step: a cancelled consumer's own stop, the gRPC grace, each cleanup.
STEP_S = 3.0
# All the steps together; the cleanups left when it is spent get a last short try each.
SHUTDOWN_BUDGET_S = 15.0
# After the signal, the process exits at the latest here (inside Kubernetes' 30 s).
HARD_LIMIT_S = 25.0
# The exit status when the watchdog had to end the process.
HARD_EXIT_STATUS = 70


def shutdown_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (Kubernetes stops pods with SIGTERM)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


def arm_watchdog(limit_s: float) -> threading.Timer:
    """End the process after ``limit_s`` unless it exited by then (a thread, so a blocked
    event loop cannot hold it up)."""

    def overrun() -> None:
        log.error(
            "shutdown did not finish in time, exiting now (uncommitted batches are redelivered)",
            extra={"fields": {"limit_s": limit_s}},
        )
        logging.shutdown()
        os._exit(HARD_EXIT_STATUS)

    timer = threading.Timer(limit_s, overrun)
    timer.daemon = True
    timer.start()
    return timer


async def bounded(what: str, step: Awaitable[object], limit_s: float) -> None:
    """Await one shutdown step for at most ``limit_s``; a step that overruns or fails is
    logged and left behind, so the steps after it still run."""
    try:
        async with asyncio.timeout(max(0.1, limit_s)):
            await step
    except TimeoutError:
        log.warning("shutdown step cut short", extra={"fields": {"step": what, "limit_s": limit_s}})
    except Exception as exc:
        log.warning(
            "shutdown step failed",
            extra={"fields": {"step": what, "error": f"{type(exc).__name__}: {exc}"}},
        )


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
    let in-flight calls finish, then run ``cleanup`` in order, each step bounded (see the
    module doc)."""
    stop = shutdown_event()
    await server.start()
    tasks = [asyncio.create_task(s.run(), name=f"consumer-{s.group}") for s in subscriptions]
    loops = [asyncio.create_task(loop(), name=name) for name, loop in background]
    jobs = [asyncio.create_task(every(interval, job)) for interval, job in periodic]
    try:
        await until_shutdown_or_failure(stop, [*tasks, *loops])
    finally:
        await shut_down(server, subscriptions, tasks, [*jobs, *loops], cleanup)


async def shut_down(
    server: GrpcServer,
    subscriptions: Sequence[Subscription[Any]],
    consumers: Sequence[asyncio.Task[None]],
    others: Sequence[asyncio.Task[None]],
    cleanup: Sequence[Callable[[], Awaitable[object] | None]],
) -> None:
    """Stop everything within :data:`SHUTDOWN_BUDGET_S`: the jobs at once, the consumers
    after :data:`DRAIN_S` at most (then cancelled), the gRPC server, then each cleanup; the
    watchdog ends the process if it has not exited :data:`HARD_LIMIT_S` from now."""
    arm_watchdog(HARD_LIMIT_S)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_BUDGET_S

    def left(step_s: float) -> float:
        return min(step_s, deadline - loop.time())

    for task in others:
        task.cancel()
    for subscription in subscriptions:
        await subscription.stop()
    if consumers:
        _, draining = await asyncio.wait(consumers, timeout=left(DRAIN_S))
        if draining:
            # Stuck (retrying a handler against a dead dependency, or committing to a dead
            # broker): their batches were not committed and will be redelivered.
            log.warning(
                "consumers did not drain in time, cancelling them",
                extra={"fields": {"consumers": sorted(t.get_name() for t in draining)}},
            )
            for task in draining:
                task.cancel()
            await asyncio.wait(draining, timeout=max(0.1, left(STEP_S)))
    grace = max(0.1, left(STEP_S))
    await bounded("grpc server", server.stop(grace), grace + 1)
    for close in cleanup:
        result = close()
        if inspect.isawaitable(result):
            await bounded(getattr(close, "__qualname__", repr(close)), result, left(STEP_S))
    # Last, so the spans of the drain are in it too.
    await flush_tracing(left(STEP_S))


async def flush_tracing(limit_s: float) -> None:
    """Export the spans still buffered and stop the exporter, bounded like every step."""
    if tracing.enabled():
        await bounded("tracing", asyncio.to_thread(tracing.shutdown), limit_s)


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
        tracing.configure(name, settings.tracing_exporter)
        serve_metrics(settings.metrics_port, settings.metrics_host, settings.metrics_token_value())
    asyncio.run(serve(settings))
