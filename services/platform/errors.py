"""Errors a domain raises; the gRPC and GraphQL edges turn them into codes callers act on."""

from __future__ import annotations

# gRPC trailers hold at most 16 KB; details past this are cut so a status always fits.
MAX_DETAILS = 400
# The trailing-metadata key of an INVALID_ARGUMENT's JSON path (``$.all[1].field``): callers
# read it rather than parse the message.
ERROR_PATH_KEY = "lodestar-error-path"


def bounded_details(message: str, limit: int = MAX_DETAILS) -> str:
    """``message`` cut to at most ``limit`` characters (ending in an ellipsis when cut), so
    an error that quotes a client's input can never overflow the status trailer."""
    if len(message) <= limit:
        return message
    return message[: limit - 1] + "\u2026"


class LodestarError(Exception):
    """Base of the errors a caller may see; the message is safe to show."""


class InvalidArgument(LodestarError):
    """The request names something wrong (gRPC INVALID_ARGUMENT, HTTP 400); ``path``, when
    known, is the JSON path of the bad part of the input (sent as :data:`ERROR_PATH_KEY`)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class NotFound(LodestarError):
    """The thing asked for does not exist (gRPC NOT_FOUND)."""


class AlreadyExists(LodestarError):
    """The thing to create exists already (gRPC ALREADY_EXISTS)."""


class FailedPrecondition(LodestarError):
    """The thing exists but is in a state that refuses the call (gRPC FAILED_PRECONDITION)."""


class Unavailable(LodestarError):
    """A dependency is down; retrying later may work (gRPC UNAVAILABLE, HTTP 503)."""


class BusUnavailable(LodestarError):
    """Kafka did not take (or give) the messages; ``transient`` when a broker was merely
    unreachable or slow, so a retry later may work."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class PoisonMessage(LodestarError):
    """A message that no retry will ever handle; it goes to the dead-letter topic at once."""


def is_infrastructure_failure(exc: BaseException) -> bool:
    """True when ``exc`` means a server is unreachable rather than the message being bad.

    Such failures are retried without end instead of dead-lettering every message while
    MongoDB or Kafka is down.
    """
    from pymongo.errors import ConnectionFailure

    if isinstance(exc, BusUnavailable):
        return exc.transient
    return isinstance(exc, ConnectionFailure | Unavailable)
