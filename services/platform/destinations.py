"""The destinations Lodestar's own consumers are, by the names a Segment ``integrations``
object uses, and Segment's rule for whether an event is for one of them. Pure logic.

``{"All": false}`` turns every destination off unless named ``true``; a destination named
``false`` is off; a destination named with an options object is on; anything else falls back
to ``All``, which is on when absent. The profile is not a destination: it takes every event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.struct_pb2 import Struct

SEGMENTS = "Lodestar Segments"
WALLET = "Lodestar Wallet"
RECOMMENDATIONS = "Lodestar Recommendations"
OWNED = (SEGMENTS, WALLET, RECOMMENDATIONS)
ALL = "All"


def _switch(value: Any) -> bool | None:
    """``True``/``False`` for a switch, ``True`` for an options object, else ``None``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return True
    return None


def allows(integrations: Mapping[str, Any], destination: str) -> bool:
    """Whether an event with this ``integrations`` object is for ``destination``."""
    named = _switch(integrations.get(destination))
    if named is not None:
        return named
    everything = integrations.get(ALL)
    return everything if isinstance(everything, bool) else True


def event_allows(integrations: Struct, destination: str) -> bool:
    """:func:`allows` on an event's ``integrations`` Struct, reading only the two fields."""
    wanted: dict[str, Any] = {}
    for name in (destination, ALL):
        value = integrations.fields.get(name)
        if value is None:
            continue
        kind = value.WhichOneof("kind")
        if kind == "bool_value":
            wanted[name] = value.bool_value
        elif kind == "struct_value":
            wanted[name] = {}
    return allows(wanted, destination)
