"""The Segment HTTP tracking spec (subset): validating a call and turning it into an ``Event``.

Pure logic: the HTTP layer hands in parsed JSON, gets an ``Event`` or an :class:`InvalidEvent`
that names the path of the bad field.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import common_pb2, events_pb2

EVENT_TYPES: dict[str, events_pb2.EventType.ValueType] = {
    "track": events_pb2.EVENT_TYPE_TRACK,
    "identify": events_pb2.EVENT_TYPE_IDENTIFY,
    "page": events_pb2.EVENT_TYPE_PAGE,
    "screen": events_pb2.EVENT_TYPE_SCREEN,
    "alias": events_pb2.EVENT_TYPE_ALIAS,
    "group": events_pb2.EVENT_TYPE_GROUP,
}
MAX_ID_LENGTH = 512
MAX_NAME_LENGTH = 200
# Protobuf refuses Structs nested much deeper; real events stay far below this.
MAX_NESTING = 20
SOURCE = "http-api"
# The identity service's rule for identifier type names, custom ones included.
IDENTIFIER_TYPE = re.compile(r"[a-z][a-z0-9_]{1,31}")
# These have their own top-level fields; a second way in would let the two disagree.
RESERVED_TYPES = frozenset({"user_id", "anonymous_id"})
# External-id types Segment's mobile SDKs and destinations send, mapped to ours.
SEGMENT_EXTERNAL_TYPES = {
    "ios.idfa": "device_id",
    "ios.idfv": "device_id",
    "android.idfa": "device_id",
    "android.id": "device_id",
    "ios.push_token": "device_id",
    "android.push_token": "device_id",
}
# Trait keys SDKs use per identifier type, in priority order, looked up in traits and then
# context.traits. Traits are free-form: a value of the wrong type is ignored, not rejected.
TRAIT_KEYS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "phone": ("phone",),
    "loyalty_number": ("loyaltyNumber", "loyalty_number"),
}
# Loyalty programmes often hand out plain numbers, which SDKs send as JSON numbers.
NUMERIC_TYPES = frozenset({"loyalty_number"})
# context.device keys for device_id: Segment sends IDFA/GAID as advertisingId, the push token
# as token.
DEVICE_KEYS = ("id", "advertisingId", "token")


class InvalidEvent(ValueError):
    """A call that breaks the spec; ``path`` locates the bad field (``batch[3].event``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _optional_string(body: dict[str, Any], key: str, path: str, limit: int) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(f"{path}{key}", f"must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidEvent(f"{path}{key}", f"is longer than {limit} characters")
    return value.strip()


def _optional_object(body: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEvent(f"{path}{key}", f"must be an object, got {type(value).__name__}")
    return value


def _optional_time(body: dict[str, Any], key: str, path: str) -> Timestamp | None:
    raw = _optional_string(body, key, path, 64)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"{path}{key}", f"is not an ISO-8601 date-time: {raw!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _optional_nested(body: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    value = _optional_object(body, key, path)
    if value is not None and _depth(value) > MAX_NESTING:
        raise InvalidEvent(f"{path}{key}", f"is nested deeper than {MAX_NESTING} levels")
    return value


def _check_size(value: Any, max_bytes: int, path: str) -> None:
    """Reject ``value`` when its compact UTF-8 JSON is larger than ``max_bytes``."""
    if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > max_bytes:
        raise InvalidEvent(path, f"is larger than {max_bytes} bytes")


def _struct(value: dict[str, Any] | None) -> Struct | None:
    if value is None:
        return None
    out = Struct()
    out.update(value)
    return out


def _as_object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _loose_string(value: Any, allow_int: bool) -> str:
    """``value`` as an identifier value, or ``""`` when it cannot be one."""
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
        return ""
    return value


def external_ids(context: dict[str, Any] | None, path: str) -> list[tuple[str, str]]:
    """Validate Segment's ``context.externalIds`` and return its ``(type, id)`` pairs in order.

    Unlike traits these are explicitly identifiers, so anything malformed is an
    :class:`InvalidEvent` naming the item's field (``context.externalIds[1].type``).
    """
    raw = (context or {}).get("externalIds")
    where = f"{path}context.externalIds"
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidEvent(where, f"must be an array, got {type(raw).__name__}")
    pairs = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise InvalidEvent(at, f"must be an object, got {type(item).__name__}")
        kind = item.get("type")
        if isinstance(kind, str):
            kind = SEGMENT_EXTERNAL_TYPES.get(kind, kind)
        if not isinstance(kind, str) or not IDENTIFIER_TYPE.fullmatch(kind):
            raise InvalidEvent(
                f"{at}.type", f"must be a string matching {IDENTIFIER_TYPE.pattern}, got {kind!r}"
            )
        if kind in RESERVED_TYPES:
            field = "userId" if kind == "user_id" else "anonymousId"
            raise InvalidEvent(f"{at}.type", f"{kind} is reserved; send it as {field}")
        value = _optional_string(item, "id", f"{at}.", MAX_ID_LENGTH)
        if not value:
            raise InvalidEvent(f"{at}.id", "must be a non-empty string")
        pairs.append((kind, value))
    return pairs


def _sdk_identifiers(
    traits: dict[str, Any] | None, context: dict[str, Any] | None
) -> Iterator[tuple[str, str]]:
    """``(type, value)`` from the trait and device fields SDKs fill; ``""`` where absent."""
    sources = (traits or {}, _as_object((context or {}).get("traits")) or {})
    for kind, keys in TRAIT_KEYS.items():
        for source in sources:
            for key in keys:
                yield kind, _loose_string(source.get(key), kind in NUMERIC_TYPES)
    device = _as_object((context or {}).get("device")) or {}
    for key in DEVICE_KEYS:
        yield "device_id", _loose_string(device.get(key), allow_int=False)


def identifiers_of(
    user_id: str,
    anonymous_id: str,
    traits: dict[str, Any] | None,
    context: dict[str, Any] | None,
    path: str = "",
) -> list[common_pb2.Identifier]:
    """Every identifier a call carries, each ``(type, value)`` once, in a stable order.

    Order: user_id, anonymous_id, email, phone, loyalty_number (traits before
    ``context.traits``), device_id, then ``context.externalIds`` as listed. Trait and device
    values pass through as sent (the identity service normalises them); unusable ones are
    skipped. Raises :class:`InvalidEvent` for a malformed ``context.externalIds``.
    """
    pairs = [("user_id", user_id), ("anonymous_id", anonymous_id)]
    pairs += _sdk_identifiers(traits, context)
    pairs += external_ids(context, path)
    # dict keeps first-seen order while dropping repeats.
    unique = dict.fromkeys((kind, value) for kind, value in pairs if value)
    return [common_pb2.Identifier(type=kind, value=value) for kind, value in unique]


def parse_call(
    body: Any, call_type: str, received_at: datetime, path: str = "", max_bytes: int = 0
) -> tuple[str, events_pb2.Event]:
    """Validate one Segment call and build its raw ``Event``; returns ``(kafka_key, event)``.

    ``call_type`` is the endpoint's type, or ``""`` inside a batch where each item says its
    own. ``max_bytes`` bounds the item's JSON size (0 = unchecked, the caller measured it).
    """
    if not isinstance(body, dict):
        raise InvalidEvent(path.rstrip(".") or "body", "must be a JSON object")
    if max_bytes:
        _check_size(body, max_bytes, path.rstrip(".") or "body")
    kind = call_type or body.get("type")
    if kind not in EVENT_TYPES:
        raise InvalidEvent(f"{path}type", f"must be one of {', '.join(EVENT_TYPES)}")
    user_id = _optional_string(body, "userId", path, MAX_ID_LENGTH)
    anonymous_id = _optional_string(body, "anonymousId", path, MAX_ID_LENGTH)
    if not user_id and not anonymous_id:
        raise InvalidEvent(f"{path}userId", "userId or anonymousId is required")
    properties = _optional_nested(body, "properties", path)
    traits = _optional_nested(body, "traits", path)
    context = _optional_nested(body, "context", path)
    name = ""
    previous_id = group_id = ""
    if kind == "track":
        name = _optional_string(body, "event", path, MAX_NAME_LENGTH)
        if not name:
            raise InvalidEvent(f"{path}event", "is required for track")
    elif kind in ("page", "screen"):
        name = _optional_string(body, "name", path, MAX_NAME_LENGTH)
    elif kind == "alias":
        previous_id = _optional_string(body, "previousId", path, MAX_ID_LENGTH)
        if not previous_id or not user_id:
            raise InvalidEvent(f"{path}previousId", "alias needs previousId and userId")
    elif kind == "group":
        group_id = _optional_string(body, "groupId", path, MAX_ID_LENGTH)
        if not group_id:
            raise InvalidEvent(f"{path}groupId", "is required for group")
    message_id = _optional_string(body, "messageId", path, MAX_ID_LENGTH)
    timestamp = _optional_time(body, "timestamp", path) or _optional_time(
        body, "originalTimestamp", path
    )
    sent_at = _optional_time(body, "sentAt", path)

    identifiers = identifiers_of(user_id, anonymous_id, traits, context, path)
    received = Timestamp()
    received.FromDatetime(received_at)
    event = events_pb2.Event(
        event_id=message_id or str(uuid.uuid4()),
        type=EVENT_TYPES[kind],
        name=name,
        identifiers=identifiers,
        properties=_struct(properties),
        traits=_struct(traits),
        context=_struct(context),
        timestamp=timestamp or received,
        sent_at=sent_at,
        received_at=received,
        source=SOURCE,
        previous_id=previous_id,
        group_id=group_id,
    )
    return user_id or anonymous_id, event


def parse_batch(
    body: Any, received_at: datetime, max_event_bytes: int
) -> list[tuple[str, events_pb2.Event]]:
    """Validate a ``/v1/batch`` body; one bad item rejects the whole batch, naming its index."""
    if not isinstance(body, dict):
        raise InvalidEvent("body", "must be a JSON object")
    items = body.get("batch")
    if not isinstance(items, list):
        raise InvalidEvent("batch", "must be an array of calls")
    if not items:
        raise InvalidEvent("batch", "must not be empty")
    shared_context = _optional_object(body, "context", "")
    # Checked once here so a bad shared externalIds is reported where it was sent.
    external_ids(shared_context, "")
    calls = []
    for index, item in enumerate(items):
        path = f"batch[{index}]"
        # Measured as sent: the batch's shared context does not count against each item.
        _check_size(item, max_event_bytes, path)
        call = item
        if shared_context and isinstance(item, dict) and "context" not in item:
            call = {**item, "context": shared_context}
        calls.append(parse_call(call, "", received_at, f"{path}."))
    return calls
