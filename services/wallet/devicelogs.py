"""What phones report on ``POST /v1/log``, made fit for the service log. Anyone can post
anything there, so only the first few messages are shown, each with e-mail addresses, URLs,
phone-like digit runs, token-like strings and control characters replaced, and cut short;
what failed ("Register task ... failed", a status code) stays readable for an operator."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

MAX_SHOWN = 10
MAX_SHOWN_LENGTH = 200
# Only the start of a message is looked at; its last, possibly cut, word is dropped.
MAX_SCANNED = 1_000

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_WORD = re.compile(r"\S+")
_TOKEN = re.compile(r"[A-Za-z0-9_+/=-]{16,}")
# A device's timestamp is kept; any other run of 7+ digits and separators is a phone number.
_DATE_OR_PHONE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})|\+?\d[\d \t().\-/]{5,}\d"
)


def _token(match: re.Match[str]) -> str:
    run = match.group()
    looks_random = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return "[token]" if looks_random else run


def _word(match: re.Match[str]) -> str:
    word = match.group()
    if "@" in word:
        return "[email]"
    if "://" in word:
        return "[url]"
    return _TOKEN.sub(_token, word)


def _date_or_phone(match: re.Match[str]) -> str:
    return match.group() if match.group("date") else "[phone]"


def redacted(message: str) -> str:
    """``message`` without contact details, links, tokens or control characters, at most
    :data:`MAX_SHOWN_LENGTH` characters (and an ellipsis when cut)."""
    text = message[:MAX_SCANNED]
    if len(message) > MAX_SCANNED:
        cut = text.rfind(" ")
        text = text[:cut] if cut > 0 else ""
    text = _UNPRINTABLE.sub(" ", text)
    text = _WORD.sub(_word, text)
    text = _DATE_OR_PHONE.sub(_date_or_phone, text)
    if len(message) > MAX_SCANNED or len(text) > MAX_SHOWN_LENGTH:
        return text[:MAX_SHOWN_LENGTH] + "…"
    return text


def log_fields(messages: Sequence[str]) -> dict[str, Any]:
    """The log fields of one device report: how many messages, and the first ones redacted."""
    return {
        "messages": len(messages),
        "logs": [redacted(m) for m in messages[:MAX_SHOWN]],
    }
