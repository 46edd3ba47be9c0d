"""JSON the platform can carry and store: parsing request bodies, and checking every key and
value of a call before anything is built from it.

Pure logic, without recursion (a few hundred bytes of brackets must not exhaust the stack):
the HTTP layer parses with :func:`loads`; the Segment layer walks each call with
:func:`check_field`. Problems are :class:`UnsafeJson` naming the path of the bad key or value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# An integer with more digits cannot be a float (nor any number a store holds); it is parsed
# as one (inf) so it is refused with its path instead of failing inside the parser.
MAX_INT_DIGITS = 300
# Keys shown in a path as `.key`; any other key is shown quoted, escaped and shortened.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SHOWN_KEY_CHARS = 40
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_LONG_NUMBER = re.compile(rf"\d{{{MAX_INT_DIGITS + 1}}}")


class UnsafeJson(ValueError):
    """A key or value no store downstream can hold; ``path`` locates it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= MAX_INT_DIGITS else float(text)


def loads(raw: bytes) -> object:
    """Parse a request body. Raises ``ValueError`` (``json.JSONDecodeError``,
    ``UnicodeDecodeError``) when it is not JSON, ``RecursionError`` when it nests deeper than
    the parser can go (see :func:`deep_path`). Non-finite numbers come back as floats for
    :func:`check_field` to refuse with their path."""
    return json.loads(raw, parse_int=_parse_int)


def child(path: str, key: str | int) -> str:
    """The path of ``key`` (an object key or array index) under ``path``, printable whatever
    the key holds: ``a.b``, ``a[3]``, ``a["x.y"]``, ``a["\\u0000…"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    shown = json.dumps(key[:_SHOWN_KEY_CHARS])  # ASCII only: escapes NUL, surrogates, quotes
    if len(key) > _SHOWN_KEY_CHARS:
        shown = shown[:-1] + '..."'
    return f"{path}[{shown}]"


def _text_problem(text: str) -> str | None:
    """What makes ``text`` unstorable, or ``None``."""
    if "\x00" in text:
        # MongoDB cannot hold NUL in a key, and values (order ids, names) become keys.
        return "contains a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate, which is not valid Unicode"
    return None


def check_key(key: str, parent: str) -> None:
    """Refuse an object key under ``parent`` that no store can hold, naming its path."""
    problem = _text_problem(key)
    if problem:
        raise UnsafeJson(child(parent, key), f"the key {problem}")


_NOT_FINITE = "must be a finite number (NaN, Infinity and numbers beyond 1.7e308 cannot be stored)"


def _fits_a_float(number: int) -> bool:
    try:
        float(number)
    except OverflowError:
        return False
    return True


def check_field(value: object, path: str, max_depth: int) -> None:
    """Refuse what cannot travel or be stored anywhere in ``value``, a call's field at
    ``path``: nesting deeper than ``max_depth`` objects or arrays (named by ``path``), NUL
    characters or unpaired surrogates in any key or string, NaN, infinite numbers or integers
    past float range (each named by its own path)."""
    # (node, its parent's path, its key there or None for the field itself, its depth); a
    # path is spelled out only for containers and problems, as most nodes are fine scalars.
    stack: list[tuple[Any, str, str | int | None, int]] = [(value, path, None, 0)]
    while stack:
        node, parent, key, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= max_depth:
                raise UnsafeJson(path, f"is nested deeper than {max_depth} levels")
            where = parent if key is None else child(parent, key)
            children: list[tuple[str | int, Any]]
            if isinstance(node, dict):
                for name in node:
                    check_key(name, where)
                children = list(node.items())
            else:
                children = list(enumerate(node))
            # Reversed onto the stack, so values are checked in document order.
            stack.extend((item, where, k, depth + 1) for k, item in reversed(children))
            continue
        if isinstance(node, str):
            problem = _text_problem(node)
        elif isinstance(node, float) and not math.isfinite(node):
            problem = _NOT_FINITE
        elif isinstance(node, int) and not isinstance(node, bool):
            problem = None if _fits_a_float(node) else _NOT_FINITE
        else:
            continue
        if problem:
            raise UnsafeJson(parent if key is None else child(parent, key), problem)


def looks_safe(value: object, max_depth: int) -> bool:
    """A fast test (C-speed, on the JSON text) that ``value`` nests at most ``max_depth``
    levels and holds no NaN, infinity, huge integer, unpaired surrogate or NUL: when ``False``,
    :func:`check_field` finds the problem and its path (or, rarely, that there is none)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (ValueError, RecursionError):  # a UnicodeEncodeError is a ValueError
        return False
    # A NUL is written as an escape; a literal backslash-u0000 in a string looks the same.
    if "\\u0000" in text:
        return False
    outside_strings = _STRING.sub("", text)
    if _LONG_NUMBER.search(outside_strings):
        return False
    depth = deepest = 0
    for bracket in _NOT_BRACKET.sub("", outside_strings):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest <= max_depth


def deep_path(raw: bytes, limit: int) -> list[str | int] | None:
    """The keys and indexes from the top of ``raw`` (JSON text) down to the first object or
    array nested deeper than ``limit``; ``None`` if none is, or the text is not JSON enough to
    tell. A plain scan, for bodies too deep for the parser."""
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        return None
    path: list[str | int] = []  # per open container: the key or index being filled
    in_object: list[bool] = []
    expect_key = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            match = _STRING.match(text, i)
            key = _string_at(match) if expect_key else ""
            if match is None or key is None:
                return None
            if expect_key:
                path[-1], expect_key = key, False
            i = match.end()
            continue
        if char in "[{":
            if len(path) >= limit:
                return path
            in_object.append(char == "{")
            path.append("" if char == "{" else 0)
            expect_key = char == "{"
        elif char in "]}":
            if not path:
                return None
            path.pop()
            in_object.pop()
            expect_key = False  # "{}" never got its key
        elif char == "," and path:
            if in_object[-1]:
                expect_key = True
            else:
                index = path[-1]
                path[-1] = index + 1 if isinstance(index, int) else index
        i += 1
    return None


def _string_at(match: re.Match[str] | None) -> str | None:
    """The string a JSON string literal stands for, or ``None``."""
    if match is None:
        return None
    try:
        text: str = json.loads(match.group())
    except ValueError:
        return None
    return text


def render(keys: list[str | int]) -> str:
    """A path from its keys and indexes, as :func:`child` writes it."""
    path = ""
    for key in keys:
        path = child(path, key)
    return path
