"""Bounds on what requests carry, checked by every servicer before use: an oversized id is
refused naming the field and the limit, never echoed back; JSON text is refused when it
nests deeper than the parser can follow without recursing out of the stack."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from services.platform.errors import InvalidArgument

# Ids the platform makes are UUIDs; ids that clients send (user ids, message ids) are capped
# at 512 characters by the ingest API, so nothing legitimate is longer.
MAX_ID_LENGTH = 512
# A string literal (closing quote optional, so an unterminated one runs to the end) or a bracket.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def check_id(field: str, value: str, *, required: bool = True, limit: int = MAX_ID_LENGTH) -> str:
    """``value`` when it is a usable id; :class:`InvalidArgument` naming ``field`` when it is
    empty (and ``required``) or longer than ``limit``, without repeating it."""
    if required and not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters")
    return value


def check_ids(
    field: str, values: Sequence[str], *, most: int, limit: int = MAX_ID_LENGTH
) -> list[str]:
    """The ids of a batch request: at most ``most`` of them, none longer than ``limit``."""
    if len(values) > most:
        raise InvalidArgument(f"{field}: at most {most} per call")
    for position, value in enumerate(values):
        if len(value) > limit:
            raise InvalidArgument(f"{field}[{position}] is longer than {limit} characters")
    return list(values)


def json_nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests objects and arrays deeper than ``limit``; found
    without recursion, so any depth is safe to check."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def load_json(text: str, max_depth: int) -> Any:
    """Parse JSON text that nests at most ``max_depth`` deep.

    Raises ``ValueError`` naming the limit for deeper text (the standard parser would
    exhaust the stack on it) and for text that is not JSON.
    """
    if json_nesting_exceeds(text, max_depth):
        raise ValueError(f"nests deeper than {max_depth} levels")
    return json.loads(text)
