"""gRPC bootstrap on ``grpc.aio``: servers with health, reflection and interceptors, and
client channels with timeouts and retries. Every service and the gateway use these."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.platform import metrics, tracing
from services.platform.errors import (
    ERROR_PATH_KEY,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    bounded_details,
)
from services.platform.rpcauth import RequireServiceToken, SendServiceToken

log = logging.getLogger(__name__)

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

_ERROR_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)


class CallEnded(asyncio.CancelledError):
    """The call was over (cancelled by the client, or past its deadline) before its status
    could be sent. A cancellation to grpc, which ends the call quietly."""


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    method: str,
    code: grpc.StatusCode,
    details: str,
    trailing_metadata: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """End the call with ``code``: the one place statuses are sent, so every status is
    sent at most once and its details are bounded.

    Raises ``grpc.aio.AbortError`` as ``context.abort`` does, or :class:`CallEnded` when
    the call ended before the status went out (grpc refuses a second abort of a call).
    """
    if context.done():
        _call_ended(method, code)
    try:
        if trailing_metadata:
            await context.abort(code, bounded_details(details), trailing_metadata)
        else:
            await context.abort(code, bounded_details(details))
    except grpc.aio.AbortError:
        raise
    except Exception:
        # grpc marks the call aborted before sending; the send fails when the peer is gone.
        _call_ended(method, code)


def _call_ended(method: str, code: grpc.StatusCode) -> NoReturn:
    log.info(
        "call ended before its status was sent",
        extra={"fields": {"method": method, "code": code.name}},
    )
    raise CallEnded from None


class _UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary-unary behaviours; streaming handlers pass through unchanged."""

    @abstractmethod
    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """Return ``behavior`` wrapped with this interceptor's concern."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        # grpc.aio registers coroutine behaviours; the stubs type them as the sync kind.
        behavior = cast(Behavior, handler.unary_unary)
        return grpc.unary_unary_rpc_method_handler(
            self.wrap(handler_call_details.method, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# Health checks (probes, launchers) are not traced: they would bury the real calls.
_UNTRACED_PREFIX = "/grpc.health.v1.Health/"


def _code_of(
    context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode
) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


class TracingInterceptor(_UnaryInterceptor):
    """A SERVER span per call named after the method, child of the caller's span (its
    ``traceparent`` metadata), with the status code. Added only when tracing is on."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        if method.startswith(_UNTRACED_PREFIX):
            return behavior

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            parent = _metadata_value(context.invocation_metadata(), tracing.TRACEPARENT)
            with tracing.rpc_server_span(method, parent) as span:
                code = grpc.StatusCode.OK
                try:
                    return await behavior(request, context)
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException:
                    code = _code_of(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    tracing.rpc_status(span, code.value[0], code.name, client=False)

        return traced


def _metadata_value(metadata: Any, key: str) -> str | bytes | None:
    for name, value in metadata or ():
        if name == key:
            return cast(str | bytes, value)
    return None


class LoggingInterceptor(_UnaryInterceptor):
    """Logs each call with its status and latency, and counts it for Prometheus."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def logged(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                status = context.code()
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.GRPC_REQUESTS.labels(method, code).inc()
                metrics.GRPC_LATENCY.labels(method).observe(elapsed)
                log.debug(
                    "rpc",
                    extra={
                        "fields": {"method": method, "code": code, "ms": round(elapsed * 1000, 2)}
                    },
                )

        return logged


class DeadlineInterceptor(_UnaryInterceptor):
    """Bounds every call: the caller's deadline, or a default when the caller set none."""

    def __init__(self, default_deadline_s: float) -> None:
        self.default_deadline_s = default_deadline_s

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            remaining = context.time_remaining()
            budget = self.default_deadline_s if remaining is None else remaining
            try:
                # In this task, not a new one (as wait_for makes): a client's cancellation
                # reaches the behaviour directly and nothing it raises goes unretrieved.
                async with asyncio.timeout(budget):
                    return await behavior(request, context)
            except TimeoutError:
                await abort(
                    context,
                    method,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{method} took longer than {budget:.2f}s",
                )

        return bounded


class ErrorInterceptor(_UnaryInterceptor):
    """Turns domain errors into status codes; anything else becomes INTERNAL with a reference,
    and the stack trace goes to the log, never to the caller."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                if context.done():
                    # A status went out, or failed to because the peer is gone: never twice.
                    _call_ended(method, context.code() or grpc.StatusCode.CANCELLED)
                for kind, code in _ERROR_CODES:
                    if isinstance(exc, kind):
                        await abort(context, method, code, str(exc), _trailers(exc))
                ref = uuid.uuid4().hex[:12]
                log.exception("unhandled error", extra={"fields": {"method": method, "ref": ref}})
                await abort(
                    context, method, grpc.StatusCode.INTERNAL, f"internal error (ref {ref})"
                )

        return guarded


def _trailers(exc: Exception) -> tuple[tuple[str, str], ...]:
    """The JSON path of an invalid argument, for callers to point at (bounded like details)."""
    path = getattr(exc, "path", None) if isinstance(exc, InvalidArgument) else None
    return ((ERROR_PATH_KEY, bounded_details(path, 200)),) if isinstance(path, str) else ()


# The health service name that says only "the process is alive" (Kubernetes' liveness probe
# asks for it): SERVING from start to shutdown, whatever the dependencies do.
LIVENESS = "lodestar.liveness"
# Prefix of the per-dependency health names (``lodestar.dependency.mongo``), for operators.
DEPENDENCY_PREFIX = "lodestar.dependency."


class GrpcServer:
    """A ``grpc.aio`` server with health checking, reflection and the standard interceptors.

    Health: the overall name ``""`` and each service's name are readiness (NOT_SERVING while
    a required dependency is down, see :meth:`set_ready`); :data:`LIVENESS` is liveness.
    """

    def __init__(
        self,
        host: str,
        port: int,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        default_deadline_s: float = 10.0,
        *,
        token: str | None = None,
    ) -> None:
        self.address = f"{host}:{port}"
        self.service_names = list(service_names)
        self.health = health.aio.HealthServicer()
        # Refusals without the token are logged and counted like any other call.
        guard: list[grpc.aio.ServerInterceptor] = [RequireServiceToken(token)] if token else []
        # Outermost, so the span covers the refusals and the logs inside carry its ids.
        traced: list[grpc.aio.ServerInterceptor] = (
            [TracingInterceptor()] if tracing.enabled() else []
        )
        self.server = grpc.aio.server(
            interceptors=[
                *traced,
                LoggingInterceptor(),
                *guard,
                ErrorInterceptor(),
                DeadlineInterceptor(default_deadline_s),
            ],
            options=[("grpc.so_reuseport", 0)],
        )
        register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    async def start(self) -> int:
        """Bind, start, mark every service SERVING; returns the bound port."""
        self.port = self.server.add_insecure_port(self.address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC on {self.address}")
        await self.server.start()
        for name in [LIVENESS, "", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def set_ready(self, ready: bool) -> None:
        """Readiness: the overall and service names SERVING or NOT_SERVING; liveness stays.
        (After :meth:`stop` began, grpc keeps everything NOT_SERVING.)"""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def set_dependency(self, dependency: str, up: bool) -> None:
        """One dependency's state under ``lodestar.dependency.<name>``."""
        await self.health.set(
            DEPENDENCY_PREFIX + dependency,
            health_pb2.HealthCheckResponse.SERVING
            if up
            else health_pb2.HealthCheckResponse.NOT_SERVING,
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, then let in-flight calls finish within ``grace_s``."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


_RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class DefaultTimeoutInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Gives calls made without a timeout a bounded one."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if client_call_details.timeout is None:
            client_call_details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                self.timeout_s,
                client_call_details.metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
        return await continuation(client_call_details, request)


class TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """A CLIENT span per call named after the method, with its status code; the call carries
    the span as ``traceparent`` metadata (the server's span becomes its child)."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        with tracing.rpc_client_span(method) as span:
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
            traceparent = tracing.traceparent_of()
            if traceparent is not None:
                metadata.add(tracing.TRACEPARENT, traceparent)
            details = grpc.aio.ClientCallDetails(
                method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            call = await continuation(details, request)
            code = await call.code()
            tracing.rpc_status(span, code.value[0], code.name, client=True)
            return call


def client_channel(
    target: str, timeout_s: float = 5.0, token: str | None = None
) -> grpc.aio.Channel:
    """A channel that retries UNAVAILABLE, times calls out after ``timeout_s`` by default,
    sends the service token when one is given and traces each call when tracing is on."""
    interceptors: list[grpc.aio.ClientInterceptor] = [DefaultTimeoutInterceptor(timeout_s)]
    if tracing.enabled():
        interceptors.insert(0, TracingClientInterceptor())
    if token:
        interceptors.append(SendServiceToken(token))
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
        ],
        interceptors=interceptors,
    )


async def check_health(target: str, service: str = "", timeout_s: float = 1.0) -> bool:
    """True when the server at ``target`` reports ``service`` as SERVING."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
