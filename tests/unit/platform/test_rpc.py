"""The server interceptors' handling of calls that end under them, with a servicer context that
behaves as grpc's does: ``abort`` marks the call aborted before sending the status, the send
fails (``ExecuteBatchError``) when the client has gone, and a second ``abort`` raises
``UsageError("Abort already called!")``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from grpc._cython import cygrpc  # type: ignore[attr-defined]

from services.platform.errors import MAX_DETAILS, NotFound, bounded_details
from services.platform.rpc import (
    Behavior,
    CallEnded,
    DeadlineInterceptor,
    ErrorInterceptor,
    LoggingInterceptor,
)

METHOD = "/lodestar.v1.SegmentationService/GetSegment"


class Context:
    """The parts of ``grpc.aio.ServicerContext`` the interceptors use."""

    def __init__(self, *, client_gone: bool, deadline_s: float | None = None) -> None:
        self.client_gone = client_gone
        self.deadline_s = deadline_s
        self.aborts: list[tuple[grpc.StatusCode, str]] = []
        self.status_sent = False
        self._code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        if self.aborts:
            raise grpc.aio.UsageError("Abort already called!")
        self.aborts.append((code, details))
        self._code = code
        self.status_sent = True
        await asyncio.sleep(0)
        if self.client_gone:
            raise cygrpc.ExecuteBatchError('Failed "execute_batch"')
        raise grpc.aio.AbortError("Locally aborted.")

    def done(self) -> bool:
        return self.status_sent

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def time_remaining(self) -> float | None:
        return self.deadline_s


def stack(behavior: Behavior, default_deadline_s: float = 5.0) -> Behavior:
    """The interceptors in the order GrpcServer installs them (the first is outermost)."""
    for interceptor in (
        DeadlineInterceptor(default_deadline_s),
        ErrorInterceptor(),
        LoggingInterceptor(),
    ):
        behavior = interceptor.wrap(METHOD, behavior)
    return behavior


async def call(behavior: Behavior, context: Context) -> Any:
    return await stack(behavior)(object(), context)  # type: ignore[arg-type]


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_deadline_reached_after_the_client_left_ends_quietly_with_one_abort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def slow(request: Any, context: Any) -> None:
        await asyncio.sleep(5)

    context = Context(client_gone=True, deadline_s=0.05)
    with pytest.raises(asyncio.CancelledError) as ended:
        await call(slow, context)
    assert isinstance(ended.value, CallEnded)
    assert [code for code, _ in context.aborts] == [grpc.StatusCode.DEADLINE_EXCEEDED]
    assert loud(caplog) == []


async def test_a_domain_error_after_the_client_left_ends_quietly_with_one_abort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def late(request: Any, context: Any) -> None:
        raise NotFound("segment 's-1' does not exist")

    context = Context(client_gone=True)
    with pytest.raises(CallEnded):
        await call(late, context)
    assert [code for code, _ in context.aborts] == [grpc.StatusCode.NOT_FOUND]
    assert loud(caplog) == []


async def test_an_error_after_the_status_went_out_is_never_aborted_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def aborts_itself(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "voided")

    context = Context(client_gone=True)
    with pytest.raises(CallEnded):
        await call(aborts_itself, context)
    assert [code for code, _ in context.aborts] == [grpc.StatusCode.FAILED_PRECONDITION]
    assert loud(caplog) == []


async def test_a_live_call_still_gets_its_status_with_bounded_details() -> None:
    async def chatty(request: Any, context: Any) -> None:
        raise NotFound("segment " + "x" * 100_000)

    context = Context(client_gone=False)
    with pytest.raises(grpc.aio.AbortError):
        await call(chatty, context)
    [(code, details)] = context.aborts
    assert code == grpc.StatusCode.NOT_FOUND
    assert details.startswith("segment xxx")
    assert len(details) == MAX_DETAILS


async def test_a_fault_is_still_internal_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: Any, context: Any) -> None:
        raise RuntimeError("secret internals")

    context = Context(client_gone=False)
    with pytest.raises(grpc.aio.AbortError):
        await call(broken, context)
    [(code, details)] = context.aborts
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in details
    assert loud(caplog) == ["unhandled error"]


def test_bounded_details_cuts_only_what_is_too_long() -> None:
    assert bounded_details("short") == "short"
    assert bounded_details("x" * MAX_DETAILS) == "x" * MAX_DETAILS
    cut = bounded_details("y" * (MAX_DETAILS + 1))
    assert len(cut) == MAX_DETAILS
    assert cut.endswith("\u2026")
