"""Hypothesis strategies for hostile input: odd unicode, odd numbers, odd times, deep and
big structures, and raw bodies that are not JSON at all.

Bodies are produced as bytes, so what goes on the wire is exactly what a hostile client
would send (lone surrogates as ``\\ud800`` escapes, ``NaN``, nesting no encoder would make).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Examples per door; raise it for a deeper search (`LODESTAR_FUZZ_EXAMPLES=2000 make test`).
EXAMPLES = int(os.environ.get("LODESTAR_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Strings an attacker reaches for: lone surrogates, NUL and control characters, bidi and
# zero-width marks, MongoDB operators and paths, format strings, very long runs.
ODD_STRINGS = [
    "\ud800",
    "\udfff",
    "a\ud83dz",
    "\x00",
    "name\x00with-nul",
    "\u202eevil",
    "\ufeff",
    "\u200b",
    "$where",
    "$gt",
    "a.b",
    ".",
    "",
    " ",
    "%s%s%n",
    "{0}",
    "null",
    "undefined",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "\U0001f600" * 3,
    "x" * 600,
    "ÿ" * 5000,
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**400,
    1e308,
    -1e308,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
]
ODD_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59Z",
    "0000-00-00T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2100-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-01-01T25:61:61Z",
    "2026-01-01",
    "yesterday",
    "",
    "2026-01-01T00:00:00+99:00",
    "1" * 64,
    "2026-01-01T00:00:00.123456789123Z",
]

strings = st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=40))
keys = st.one_of(st.sampled_from(ODD_STRINGS[:20]), st.text(min_size=0, max_size=12))
scalars = st.one_of(
    st.none(),
    strings,
    st.sampled_from(ODD_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
times = st.one_of(st.sampled_from(ODD_TIMES), strings, st.sampled_from(ODD_NUMBERS))


def dumps(value: Any) -> bytes:
    """JSON as a lax client writes it: non-ASCII escaped (lone surrogates survive as
    ``\\udXXX`` escapes), ``NaN`` and ``Infinity`` allowed."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


def nested_text(depth: int, opener: str = "[", closer: str = "]", inner: str = "1") -> str:
    """A JSON text nested ``depth`` deep, written directly (no encoder recurses that far)."""
    if opener == "{":
        return '{"a":' * depth + inner + "}" * depth
    return opener * depth + inner + closer * depth


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bodies that break JSON itself, or nest past any sane depth."""
    depth = draw(st.sampled_from([50, 200, 400, 1000, 5000]))
    kind = draw(st.sampled_from(["list", "object", "in-call", "junk", "truncated", "utf8"]))
    if kind == "list":
        return nested_text(depth).encode()
    if kind == "object":
        return nested_text(depth, "{").encode()
    if kind == "in-call":
        field = draw(st.sampled_from(["properties", "traits", "context", "batch"]))
        return (
            '{"userId":"u","event":"E","type":"track","' + field + '":' + nested_text(depth) + "}"
        ).encode()
    if kind == "junk":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        return b'{"userId": "u", "event": "E", "properties": {"a": [1, 2'
    return b'{"userId": "\xff\xfe", "event": "\xed\xa0\x80"}'


@st.composite
def calls(draw: st.DrawFn, user_ids: list[str], message_ids: list[str]) -> dict[str, Any]:
    """A Segment call whose every field may be hostile; ids come from the given pools, so
    ids of other customers' events are reused on purpose."""
    call: dict[str, Any] = {}
    call["type"] = draw(
        st.sampled_from(["track", "identify", "page", "screen", "alias", "group"]) | strings
    )
    call["userId"] = draw(st.sampled_from(user_ids) | scalars)
    if draw(st.booleans()):
        call["anonymousId"] = draw(st.sampled_from(user_ids) | strings)
    call["event"] = draw(st.sampled_from(["Order Completed", "Product Viewed"]) | strings)
    for name in ("properties", "traits", "context"):
        if draw(st.booleans()):
            call[name] = draw(st.dictionaries(keys, json_values, max_size=4) | json_values)
    for name in ("timestamp", "originalTimestamp", "sentAt"):
        if draw(st.booleans()):
            call[name] = draw(times)
    if draw(st.booleans()):
        call["messageId"] = draw(st.sampled_from(message_ids) | strings)
    for name in ("previousId", "groupId", "name"):
        if draw(st.booleans()):
            call[name] = draw(strings | scalars)
    return call
