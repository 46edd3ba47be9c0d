"""Checking that a store hands typed records out, not raw MongoDB documents: the return
annotations of its public methods (and a record's fields), resolved and walked."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, get_args, get_origin, get_type_hints

# Container origins a raw document hides behind (``dict[str, Any]``, ``Mapping[str, Any]``).
_MAPPINGS = (dict, Mapping)


def _raw_parts(annotation: object) -> Iterator[str]:
    """Every part of ``annotation`` that is untyped: ``Any`` or a mapping to ``Any``."""
    if annotation is Any:
        yield "Any"
        return
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in _MAPPINGS and len(args) == 2 and args[1] is Any:
        yield f"{origin.__name__}[{getattr(args[0], '__name__', args[0])}, Any]"
        return
    # Unions, lists, tuples and other generics: look inside.
    if origin is not None:
        for arg in args:
            yield from _raw_parts(arg)


def raw_returns(cls: type, names: Mapping[str, object] | None = None) -> dict[str, list[str]]:
    """Public methods of ``cls`` whose return type is (or holds) a raw document, with the
    untyped parts found; empty when every public method returns typed records. ``names``
    resolves what string aliases name but the module does not import (``events_pb2``)."""
    found: dict[str, list[str]] = {}
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_") or member.__qualname__.split(".")[0] != cls.__name__:
            continue
        parts = list(_raw_parts(get_type_hints(member, localns=dict(names or {})).get("return")))
        if parts:
            found[name] = parts
    return found


def raw_fields(cls: type, free_json: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Annotated fields of ``cls`` (a dataclass, a TypedDict or a class with annotations)
    that are raw documents, except the ones named in ``free_json``."""
    found: dict[str, list[str]] = {}
    for name, annotation in get_type_hints(cls).items():
        parts = list(_raw_parts(annotation))
        if parts and name not in free_json:
            found[name] = parts
    return found
