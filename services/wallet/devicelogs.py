"""What phones report on ``POST /v1/log``, made fit for the service log.

Anyone can post anything there, so a message is never logged as sent: only the words of the
Wallet app's own error reports (an allow-list), status codes, times and pass type ids are
kept, every other word becomes ``·``. Names, addresses, numbers and tokens cannot pass; what
failed ("Register task ... encountered error: Unexpected response code 401") stays readable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypedDict

MAX_SHOWN = 10
MAX_SHOWN_LENGTH = 200
# Only the start of a message is looked at.
MAX_SCANNED = 1_000
HIDDEN = "·"

# Words of the Wallet app's web-service error reports (lower case).
_WORDS = """
    a an and are as at but by for from in is it no not of on or than the to was were with
    web service services error errors failed failure fail authentication authorization
    unauthorized forbidden unexpected response responses request requests code status
    server client task tasks get register registration unregister unregistration pass passes
    type serial serials number numbers device devices push token tokens update updated
    updates updating since if-modified-since lastupdated tag tags remained same changed
    what included missing malformed data invalid could cannot find found download
    downloading downloaded signature manifest certificate ssl tls connection network timed
    timeout out offline url http https json body header headers content length empty
    too large ignored ignoring will retry retrying later redirect redirected
"""
_VOCABULARY = frozenset(_WORDS.split())
_STATUS = re.compile(r"[1-5]\d\d")
# Words after which a three-digit number is an HTTP status, not part of a phone number.
_STATUS_AFTER = frozenset({"code", "status"})
_TIME = re.compile(r"[\d:+.\-TZ]+")
_OFFSET = re.compile(r"[+-]\d{4}")
_PASS_TYPE = re.compile(r"pass\.[A-Za-z0-9.\-]{1,200}")
_EDGE_PUNCTUATION = "[](){}<>'\",;:.!?"


def _shown(word: str, previous: str) -> str:
    core = word.strip(_EDGE_PUNCTUATION)
    if not core:
        return word if word.isascii() and word.isprintable() else HIDDEN
    kept = (
        core.lower() in _VOCABULARY
        or (_STATUS.fullmatch(core) and previous.strip(_EDGE_PUNCTUATION).lower() in _STATUS_AFTER)
        or (_TIME.fullmatch(core) and (":" in core or core.count("-") == 2))
        or _OFFSET.fullmatch(core)
        or _PASS_TYPE.fullmatch(core)
    )
    return word if kept and word.isascii() and word.isprintable() else HIDDEN


def redacted(message: str) -> str:
    """``message`` with only allow-listed words left, at most :data:`MAX_SHOWN_LENGTH`
    characters (and an ellipsis when cut)."""
    sent = message[:MAX_SCANNED].split()
    words = [_shown(w, sent[i - 1] if i else "") for i, w in enumerate(sent)]
    if len(message) > MAX_SCANNED and words:
        words[-1] = HIDDEN  # possibly cut in two
    collapsed: list[str] = []
    for word in words:
        if not (word == HIDDEN and collapsed and collapsed[-1] == HIDDEN):
            collapsed.append(word)
    text = " ".join(collapsed)
    if len(message) > MAX_SCANNED or len(text) > MAX_SHOWN_LENGTH:
        return text[:MAX_SHOWN_LENGTH] + "…"
    return text


class DeviceLogFields(TypedDict):
    """The log fields of one device report."""

    messages: int
    logs: list[str]


def log_fields(messages: Sequence[str]) -> DeviceLogFields:
    """The log fields of one device report: how many messages, and the first ones redacted."""
    return {
        "messages": len(messages),
        "logs": [redacted(m) for m in messages[:MAX_SHOWN]],
    }
