"""The Segment HTTP tracking spec (subset): validating a call and turning it into an ``Event``.

Pure logic: the HTTP layer hands in parsed JSON, gets an ``Event`` or an :class:`InvalidEvent`
that names the path of the bad field. What is accepted can be carried and stored by every
service downstream (see :mod:`gateway.jsonsafe`); the event time is corrected for the device's
clock skew and bounded; the event id is derived from ``messageId`` and the call's content.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from gateway import jsonsafe
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
# Segment's SDKs send UUIDs (36) or "ajs-next-" ids; longer is not an SDK's.
MAX_MESSAGE_ID_LENGTH = 100
# Calls in one batch; Segment's SDKs send far fewer (the byte cap binds first for most).
MAX_BATCH_EVENTS = 2_500
# Segment's destination switches: names to booleans or small option objects.
MAX_INTEGRATIONS_BYTES = 8 * 1024
MAX_INTEGRATIONS_NESTING = 5
# Protobuf refuses Structs nested much deeper; real events stay far below this. It bounds
# every field of a call, so nothing nested deeper reaches a recursive encoder.
MAX_NESTING = 20
SOURCE = "http-api"
# Event times, after the sentAt correction: later than this after receipt is a wrong clock
# (it would win every trait and pin last-seen for good); earlier than the platform's epoch is
# too (a device clock reset to 1970).
MAX_AHEAD = timedelta(days=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
# Event ids of calls with a messageId: uuid5(namespace, messageId + content digest).
EVENT_ID_NAMESPACE = uuid.UUID("0b6f3f7e-5c1d-4d52-9a8e-3f2c7d9e41a6")
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


def _optional_time(body: dict[str, Any], key: str, path: str) -> datetime | None:
    """An ISO-8601 date-time field in UTC (naive ones taken as UTC), or ``None``."""
    raw = _optional_string(body, key, path, 64)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"{path}{key}", f"is not an ISO-8601 date-time: {raw!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+14:00 is a valid ISO date-time but before year 1 in UTC.
        raise InvalidEvent(
            f"{path}{key}", "is out of range: not within years 1-9999 in UTC"
        ) from None


def _integrations(body: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The call's ``integrations``: an object of at most :data:`MAX_INTEGRATIONS_BYTES` and
    :data:`MAX_INTEGRATIONS_NESTING` levels, or ``None``."""
    value = _optional_object(body, "integrations", path)
    if value is None:
        return None
    where = f"{path}integrations"
    try:
        jsonsafe.check_field(value, where, MAX_INTEGRATIONS_NESTING)
    except jsonsafe.UnsafeJson as exc:
        raise InvalidEvent(exc.path, exc.message) from None
    _check_size(value, MAX_INTEGRATIONS_BYTES, where)
    return value


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _event_time(
    body: dict[str, Any], path: str, received_at: datetime, sent_at: datetime | None
) -> datetime:
    """When the call happened: its ``timestamp`` (else ``originalTimestamp``) moved by the
    device's clock skew (``receivedAt - sentAt``) when ``sentAt`` is known, else receipt.

    Raises :class:`InvalidEvent` when that is more than :data:`MAX_AHEAD` after receipt or
    before :data:`EARLIEST`."""
    key = "timestamp"
    moment = _optional_time(body, key, path)
    if moment is None:
        key = "originalTimestamp"
        moment = _optional_time(body, key, path)
    if moment is None:
        return received_at
    corrected = ""
    if sent_at is not None:
        corrected = " (once corrected by sentAt for the device's clock)"
        try:
            moment = moment + (received_at - sent_at)
        except OverflowError:
            raise InvalidEvent(f"{path}{key}", f"is out of range{corrected}") from None
    if moment > received_at + MAX_AHEAD:
        raise InvalidEvent(
            f"{path}{key}", f"is more than a day after the call was received{corrected}"
        )
    if moment < EARLIEST:
        raise InvalidEvent(f"{path}{key}", f"is before {EARLIEST.date().isoformat()}{corrected}")
    return moment


def _check_values(call: dict[str, Any], path: str) -> None:
    """Refuse any key or value of ``call`` no downstream store can hold, naming its path
    (see :func:`gateway.jsonsafe.check_field`); each field nests at most
    :data:`MAX_NESTING` levels."""
    # The object itself is one level more than its fields.
    if jsonsafe.looks_safe(call, MAX_NESTING + 1):
        return
    base = path.rstrip(".")
    try:
        for key, value in call.items():
            jsonsafe.check_key(key, base)
            jsonsafe.check_field(value, jsonsafe.child(base, key), MAX_NESTING)
    except jsonsafe.UnsafeJson as exc:
        raise InvalidEvent(exc.path, exc.message) from None


def _check_trait_names(traits: dict[str, Any] | None, path: str) -> None:
    # A trait's name is its field name in the profile, and a field name cannot be empty.
    if traits is not None and "" in traits:
        raise InvalidEvent(jsonsafe.child(path, ""), "trait names must not be empty")


def _shown(value: object) -> str:
    """``value`` for an error message: as written if short, else only its type."""
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__} too long to show"


def _event_id(message_id: str, content: dict[str, Any]) -> str:
    """The event id: random without a ``messageId``, else derived from it and the call's
    content, so an SDK's retry of a call is the same event while a different call under a
    known ``messageId`` (another customer's, say: the write key is public) is a new one."""
    if not message_id:
        return str(uuid.uuid4())
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{message_id}\n{digest}"))


def _check_size(value: object, max_bytes: int, path: str) -> None:
    """Reject ``value`` when its compact UTF-8 JSON is larger than ``max_bytes``."""
    if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > max_bytes:
        raise InvalidEvent(path, f"is larger than {max_bytes} bytes")


def _struct(value: dict[str, Any] | None) -> Struct | None:
    if value is None:
        return None
    out = Struct()
    out.update(value)
    return out


def _as_object(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _loose_string(value: object, allow_int: bool) -> str:
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
                f"{at}.type",
                f"must be a string matching {IDENTIFIER_TYPE.pattern}, got {_shown(kind)}",
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
    body: object,
    call_type: str,
    received_at: datetime,
    path: str = "",
    max_bytes: int = 0,
    *,
    client_ip: str = "",
) -> tuple[str, events_pb2.Event]:
    """Validate one Segment call and build its raw ``Event``; returns ``(kafka_key, event)``.

    ``call_type`` is the endpoint's type, or ``""`` inside a batch where each item says its
    own. ``max_bytes`` bounds the item's JSON size (0 = unchecked, the caller measured it).
    ``client_ip`` (the sender's address) becomes ``context.ip`` unless the call set one.
    """
    if not isinstance(body, dict):
        raise InvalidEvent(path.rstrip(".") or "body", "must be a JSON object")
    _check_values(body, path)
    if max_bytes:
        _check_size(body, max_bytes, path.rstrip(".") or "body")
    return _build(body, call_type, received_at, path, None, client_ip=client_ip)


def _with_ip(context: dict[str, Any] | None, client_ip: str) -> dict[str, Any] | None:
    """``context`` with ``ip`` set to ``client_ip`` unless the client sent its own."""
    if not client_ip or (context is not None and context.get("ip") is not None):
        return context
    return {**(context or {}), "ip": client_ip}


def _build(
    body: dict[str, Any],
    call_type: str,
    received_at: datetime,
    path: str,
    shared_sent_at: datetime | None,
    *,
    client_ip: str = "",
) -> tuple[str, events_pb2.Event]:
    """:func:`parse_call` on a call whose values were checked already."""
    kind = call_type or body.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise InvalidEvent(f"{path}type", f"must be one of {', '.join(EVENT_TYPES)}")
    user_id = _optional_string(body, "userId", path, MAX_ID_LENGTH)
    anonymous_id = _optional_string(body, "anonymousId", path, MAX_ID_LENGTH)
    if not user_id and not anonymous_id:
        raise InvalidEvent(f"{path}userId", "userId or anonymousId is required")
    properties = _optional_object(body, "properties", path)
    traits = _optional_object(body, "traits", path)
    context = _optional_object(body, "context", path)
    integrations = _integrations(body, path)
    _check_trait_names(traits, f"{path}traits")
    # The profile takes context.traits as traits too.
    _check_trait_names(_as_object((context or {}).get("traits")), f"{path}context.traits")
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
    message_id = _optional_string(body, "messageId", path, MAX_MESSAGE_ID_LENGTH)
    sent_at = _optional_time(body, "sentAt", path) or shared_sent_at
    occurred_at = _event_time(body, path, received_at, sent_at)

    identifiers = identifiers_of(user_id, anonymous_id, traits, context, path)
    # What makes the call this call: not sentAt (SDKs restamp it on every retry) nor receipt.
    content = {
        "type": kind,
        "name": name,
        "userId": user_id,
        "anonymousId": anonymous_id,
        "identifiers": [[i.type, i.value] for i in identifiers],
        "properties": properties,
        "traits": traits,
        "context": context,
        "timestamp": body.get("timestamp"),
        "originalTimestamp": body.get("originalTimestamp"),
        "previousId": previous_id,
        "groupId": group_id,
    }
    if integrations is not None:
        # Only when sent, so the ids of calls without it stay what they were.
        content["integrations"] = integrations
    event = events_pb2.Event(
        event_id=_event_id(message_id, content),
        message_id=message_id,
        type=EVENT_TYPES[kind],
        name=name,
        identifiers=identifiers,
        properties=_struct(properties),
        traits=_struct(traits),
        # Not part of the content: a retry from another network is the same event.
        context=_struct(_with_ip(context, client_ip)),
        timestamp=_stamp(occurred_at),
        sent_at=_stamp(sent_at) if sent_at is not None else None,
        received_at=_stamp(received_at),
        source=SOURCE,
        previous_id=previous_id,
        group_id=group_id,
        integrations=_struct(integrations),
    )
    return user_id or anonymous_id, event


@dataclass(frozen=True)
class Batch:
    """A batch's calls split into the valid ones, ``(index, kafka_key, event)``, and the
    rejected ones, ``(index, problem)``."""

    calls: list[tuple[int, str, events_pb2.Event]] = field(default_factory=list)
    rejected: list[tuple[int, InvalidEvent]] = field(default_factory=list)


def _merged(item: dict[str, Any], key: str, shared: dict[str, Any] | None) -> dict[str, Any]:
    """``item`` with the batch's ``shared`` object merged under its ``key``, the item's own
    fields winning; an item's malformed value is left alone for its own error."""
    if not shared:
        return item
    own = item.get(key)
    if own is None:
        return {**item, key: shared}
    if isinstance(own, dict):
        return {**item, key: {**shared, **own}}
    return item


def split_batch(
    body: object,
    received_at: datetime,
    max_event_bytes: int,
    max_events: int = MAX_BATCH_EVENTS,
    *,
    client_ip: str = "",
) -> Batch:
    """Validate a ``/v1/batch`` body call by call: a bad call is rejected alone, naming its
    index; a bad envelope (not an object, ``batch`` not a non-empty array of at most
    ``max_events``, bad batch-level fields) raises :class:`InvalidEvent` for the whole batch.

    The batch's ``context`` and ``integrations`` merge into each call's (the call's fields
    win); its ``sentAt`` serves calls without their own; ``client_ip`` is each call's
    ``context.ip`` unless it has one."""
    if not isinstance(body, dict):
        raise InvalidEvent("body", "must be a JSON object")
    items = body.get("batch")
    if not isinstance(items, list):
        raise InvalidEvent("batch", "must be an array of calls")
    if not items:
        raise InvalidEvent("batch", "must not be empty")
    if len(items) > max_events:
        raise InvalidEvent("batch", f"holds {len(items)} calls; at most {max_events} are accepted")
    _check_values({k: v for k, v in body.items() if k != "batch"}, "")
    shared_context = _optional_object(body, "context", "")
    shared = {"context": shared_context, "integrations": _integrations(body, "")}
    # Checked once here so a bad shared externalIds is reported where it was sent.
    external_ids(shared_context, "")
    _check_trait_names(_as_object((shared_context or {}).get("traits")), "context.traits")
    shared_sent_at = _optional_time(body, "sentAt", "")
    batch = Batch()
    for index, item in enumerate(items):
        try:
            key, event = _batch_item(
                item,
                index,
                received_at,
                max_event_bytes,
                shared=shared,
                shared_sent_at=shared_sent_at,
                client_ip=client_ip,
            )
        except InvalidEvent as problem:
            batch.rejected.append((index, problem))
            continue
        batch.calls.append((index, key, event))
    return batch


def _batch_item(
    item: object,
    index: int,
    received_at: datetime,
    max_event_bytes: int,
    *,
    shared: dict[str, dict[str, Any] | None],
    shared_sent_at: datetime | None,
    client_ip: str,
) -> tuple[str, events_pb2.Event]:
    """One call of a batch, with the batch's ``shared`` objects merged in."""
    path = f"batch[{index}]"
    if not isinstance(item, dict):
        raise InvalidEvent(path, "must be a JSON object")
    _check_values(item, f"{path}.")
    # Measured as sent: the batch's shared fields do not count against each item.
    _check_size(item, max_event_bytes, path)
    call = item
    for key, value in shared.items():
        call = _merged(call, key, value)
    return _build(call, "", received_at, f"{path}.", shared_sent_at, client_ip=client_ip)


def parse_batch(
    body: object, received_at: datetime, max_event_bytes: int, max_events: int = MAX_BATCH_EVENTS
) -> list[tuple[str, events_pb2.Event]]:
    """:func:`split_batch`, all or nothing: the first bad call rejects the whole batch."""
    batch = split_batch(body, received_at, max_event_bytes, max_events)
    if batch.rejected:
        raise batch.rejected[0][1]
    return [(key, event) for _, key, event in batch.calls]
