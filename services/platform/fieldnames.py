"""Names from customers' data (trait and event names) as MongoDB field names.

'.' and a leading '$' are meaningful to MongoDB, so they are percent-escaped (and '%' with
them). Every service that stores such names as keys uses these two functions, so a rule
written with the original name finds the stored field.
"""

from __future__ import annotations


def field_key(name: str) -> str:
    """A MongoDB-safe field name for an event or trait name."""
    escaped = name.replace("%", "%25").replace(".", "%2E")
    return "%24" + escaped[1:] if escaped.startswith("$") else escaped


def original_name(key: str) -> str:
    """Undo :func:`field_key`."""
    return key.replace("%24", "$").replace("%2E", ".").replace("%25", "%")
