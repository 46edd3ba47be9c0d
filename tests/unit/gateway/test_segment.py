"""The Segment tracking spec: valid calls become Events; bad ones name the bad field's path."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from gateway.segment import SOURCE, InvalidEvent, identifiers_of, parse_batch, parse_call
from lodestar.v1 import events_pb2

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
MAX_EVENT = 32 * 1024


def ids(event: events_pb2.Event) -> list[tuple[str, str]]:
    return [(i.type, i.value) for i in event.identifiers]


def invalid(body: Any, call_type: str = "track", max_bytes: int = 0) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as raised:
        parse_call(body, call_type, RECEIVED, max_bytes=max_bytes)
    return raised.value


def test_track_is_translated() -> None:
    key, event = parse_call(
        {
            "userId": "u-1",
            "anonymousId": "anon-1",
            "event": "Order Completed",
            "messageId": "msg-1",
            "properties": {"total": 42.5, "items": [1, 2]},
            "timestamp": "2024-04-30T10:00:00Z",
            "sentAt": "2024-04-30T10:00:05Z",
        },
        "track",
        RECEIVED,
    )
    assert key == "u-1"
    assert event.message_id == "msg-1"
    assert str(uuid.UUID(event.event_id)) == event.event_id  # derived from it and the content
    assert event.type == events_pb2.EVENT_TYPE_TRACK
    assert event.name == "Order Completed"
    assert ids(event) == [("user_id", "u-1"), ("anonymous_id", "anon-1")]
    assert MessageToDict(event.properties) == {"total": 42.5, "items": [1, 2]}
    # Happened 5 s before it was sent by the device's clock: 5 s before it was received.
    assert event.timestamp.ToDatetime(UTC) == datetime(2024, 5, 1, 11, 59, 55, tzinfo=UTC)
    assert event.sent_at.ToDatetime(UTC) == datetime(2024, 4, 30, 10, 0, 5, tzinfo=UTC)
    assert event.received_at.ToDatetime(UTC) == RECEIVED
    assert event.source == SOURCE
    assert event.customer_id == ""
    assert not event.HasField("traits")


def test_identify_collects_emails_from_traits_and_context() -> None:
    key, event = parse_call(
        {
            "anonymousId": "anon-1",
            "traits": {"email": "Ada@Example.com", "plan": "gold"},
            "context": {"traits": {"email": "ada@work.example"}, "ip": "10.0.0.1"},
        },
        "identify",
        RECEIVED,
    )
    assert key == "anon-1"
    assert event.type == events_pb2.EVENT_TYPE_IDENTIFY
    assert ids(event) == [
        ("anonymous_id", "anon-1"),
        ("email", "Ada@Example.com"),
        ("email", "ada@work.example"),
    ]
    assert MessageToDict(event.traits) == {"email": "Ada@Example.com", "plan": "gold"}
    assert MessageToDict(event.context)["ip"] == "10.0.0.1"


def test_email_that_is_not_a_string_is_not_an_identifier() -> None:
    _, event = parse_call(
        {"userId": "u-1", "traits": {"email": 42}, "context": {"traits": "x"}},
        "identify",
        RECEIVED,
    )
    assert ids(event) == [("user_id", "u-1")]


def identify(**body: Any) -> list[tuple[str, str]]:
    """The identifiers of an identify call from user ``u`` with ``body`` added."""
    return ids(parse_call({"userId": "u", **body}, "identify", RECEIVED)[1])


def external(*items: Any) -> dict[str, Any]:
    return {"externalIds": list(items)}


def ext(type_: str, id_: Any) -> dict[str, Any]:
    return {"id": id_, "type": type_, "collection": "users", "encoding": "none"}


def test_phone_comes_from_traits_and_context_traits_as_sent() -> None:
    assert identify(
        traits={"phone": "+44 20 7946 0958"}, context={"traits": {"phone": "020 7946 0000"}}
    ) == [("user_id", "u"), ("phone", "+44 20 7946 0958"), ("phone", "020 7946 0000")]


def test_device_id_comes_from_device_id_advertising_id_and_push_token() -> None:
    device = {"id": "dev-1", "advertisingId": "IDFA-1", "token": "push-1", "model": "iPhone"}
    assert identify(context={"device": device}) == [
        ("user_id", "u"),
        ("device_id", "dev-1"),
        ("device_id", "IDFA-1"),
        ("device_id", "push-1"),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"traits": {"loyaltyNumber": "L-1"}}, "L-1"),
        ({"traits": {"loyalty_number": "L-2"}}, "L-2"),
        ({"context": {"traits": {"loyaltyNumber": "L-3"}}}, "L-3"),
        ({"context": {"traits": {"loyalty_number": "L-4"}}}, "L-4"),
        ({"traits": {"loyaltyNumber": 123456}}, "123456"),
        ({"context": {"traits": {"loyalty_number": 0}}}, "0"),
    ],
)
def test_loyalty_number_comes_from_either_spelling_in_traits_or_context_traits(
    body: dict[str, Any], expected: str
) -> None:
    assert identify(**body) == [("user_id", "u"), ("loyalty_number", expected)]


def test_external_ids_carry_wallet_serials_and_custom_types_in_order() -> None:
    context = external(ext("wallet_serial", "ser-1"), ext("crm_id", "C-9"), ext("crm_id", "C-8"))
    assert identify(context=context) == [
        ("user_id", "u"),
        ("wallet_serial", "ser-1"),
        ("crm_id", "C-9"),
        ("crm_id", "C-8"),
    ]


def test_external_id_needs_only_id_and_type() -> None:
    assert identify(context=external({"id": "ser-1", "type": "wallet_serial"})) == [
        ("user_id", "u"),
        ("wallet_serial", "ser-1"),
    ]


def test_external_ids_may_be_absent_null_or_empty() -> None:
    assert identify(context={"externalIds": None}) == [("user_id", "u")]
    assert identify(context={"externalIds": []}) == [("user_id", "u")]


def test_every_source_together_in_a_stable_order() -> None:
    traits = {"email": "a@x.io", "phone": "+1555", "loyaltyNumber": 7}
    context = {
        "traits": {"email": "b@x.io", "phone": "+1666", "loyalty_number": "L-8"},
        "device": {"id": "dev-1", "advertisingId": "ad-1", "token": "tok-1"},
        **external(ext("wallet_serial", "ser-1"), ext("crm_id", "C-1")),
    }
    body = {"userId": "u", "anonymousId": "a", "traits": traits, "context": context}
    expected = [
        ("user_id", "u"),
        ("anonymous_id", "a"),
        ("email", "a@x.io"),
        ("email", "b@x.io"),
        ("phone", "+1555"),
        ("phone", "+1666"),
        ("loyalty_number", "7"),
        ("loyalty_number", "L-8"),
        ("device_id", "dev-1"),
        ("device_id", "ad-1"),
        ("device_id", "tok-1"),
        ("wallet_serial", "ser-1"),
        ("crm_id", "C-1"),
    ]
    for _ in range(3):
        assert ids(parse_call(body, "identify", RECEIVED)[1]) == expected


def test_same_type_and_value_appear_once() -> None:
    traits = {"email": "a@x.io", "phone": "+1555", "loyaltyNumber": 42, "loyalty_number": "42"}
    context = {
        "traits": {"email": "a@x.io", "phone": "+1555"},
        "device": {"id": "d-1", "advertisingId": "d-1", "token": "d-1"},
        **external(ext("email", "a@x.io"), ext("crm_id", "C-1"), ext("crm_id", "C-1")),
    }
    assert identify(traits=traits, context=context) == [
        ("user_id", "u"),
        ("email", "a@x.io"),
        ("phone", "+1555"),
        ("loyalty_number", "42"),
        ("device_id", "d-1"),
        ("crm_id", "C-1"),
    ]


def test_same_value_under_different_types_is_kept() -> None:
    assert identify(anonymousId="u", traits={"phone": "123", "loyaltyNumber": "123"}) == [
        ("user_id", "u"),
        ("anonymous_id", "u"),
        ("phone", "123"),
        ("loyalty_number", "123"),
    ]


@pytest.mark.parametrize(
    "value", [123, 1.5, True, None, {"number": "+1555"}, ["+1555"], "", "   ", "x" * 513]
)
def test_unusable_trait_and_device_values_are_skipped_silently(value: Any) -> None:
    traits = {"email": value, "phone": value, "loyaltyNumber": value, "loyalty_number": value}
    context = {"traits": traits, "device": {"id": value, "advertisingId": value, "token": value}}
    if isinstance(value, int) and not isinstance(value, bool):
        expected = [("user_id", "u"), ("loyalty_number", "123")]
    else:
        expected = [("user_id", "u")]
    assert identify(traits=traits, context=context) == expected


@pytest.mark.parametrize("device", ["iPhone", ["dev-1"], 7])
def test_device_that_is_not_an_object_is_ignored(device: Any) -> None:
    assert identify(context={"device": device}) == [("user_id", "u")]


def test_identifiers_of_reads_the_same_sources_as_parse_call() -> None:
    found = identifiers_of(
        "",
        "anon-1",
        {"phone": "+1555"},
        {"device": {"id": "dev-1"}, **external(ext("crm_id", "C-1"))},
    )
    assert [(i.type, i.value) for i in found] == [
        ("anonymous_id", "anon-1"),
        ("phone", "+1555"),
        ("device_id", "dev-1"),
        ("crm_id", "C-1"),
    ]


@pytest.mark.parametrize(
    ("external_ids", "path", "message"),
    [
        ({"id": "x", "type": "crm_id"}, "context.externalIds", "must be an array, got dict"),
        ("crm_id:x", "context.externalIds", "must be an array, got str"),
        (["crm_id:x"], "context.externalIds[0]", "must be an object, got str"),
        ([ext("crm_id", "C-1"), None], "context.externalIds[1]", "must be an object"),
        ([ext("crm_id", 42)], "context.externalIds[0].id", "must be a string, got int"),
        ([{"type": "crm_id"}], "context.externalIds[0].id", "must be a non-empty string"),
        ([ext("crm_id", "")], "context.externalIds[0].id", "must be a non-empty string"),
        ([ext("crm_id", "  ")], "context.externalIds[0].id", "must be a non-empty string"),
        ([ext("crm_id", "x" * 513)], "context.externalIds[0].id", "longer than 512"),
        ([{"id": "x"}], "context.externalIds[0].type", "must be a string matching"),
        ([ext("crm_id", "C"), ext("CRM", "x")], "context.externalIds[1].type", "matching"),
        ([ext("web.cookie", "x")], "context.externalIds[0].type", "matching"),
        ([ext("1crm", "x")], "context.externalIds[0].type", "matching"),
        ([ext("c", "x")], "context.externalIds[0].type", "matching"),
        ([ext("c" * 33, "x")], "context.externalIds[0].type", "matching"),
        ([ext("crm_id\n", "x")], "context.externalIds[0].type", "matching"),
        ([{"id": "x", "type": 7}], "context.externalIds[0].type", "must be a string matching"),
        ([ext("user_id", "u-2")], "context.externalIds[0].type", "reserved; send it as userId"),
        (
            [ext("anonymous_id", "a-2")],
            "context.externalIds[0].type",
            "reserved; send it as anonymousId",
        ),
    ],
)
def test_bad_external_ids_are_rejected_naming_the_field(
    external_ids: Any, path: str, message: str
) -> None:
    error = invalid({"userId": "u", "context": {"externalIds": external_ids}}, "identify")
    assert error.path == path
    assert message in error.message


def test_longest_allowed_external_id_and_type_are_accepted() -> None:
    type_ = "c" * 32
    assert identify(context=external(ext(type_, "x" * 512))) == [
        ("user_id", "u"),
        (type_, "x" * 512),
    ]


@pytest.mark.parametrize(
    ("call_type", "body", "expected_type", "name"),
    [
        ("page", {"userId": "u", "name": "Home"}, events_pb2.EVENT_TYPE_PAGE, "Home"),
        ("page", {"userId": "u"}, events_pb2.EVENT_TYPE_PAGE, ""),
        ("screen", {"userId": "u", "name": "Cart"}, events_pb2.EVENT_TYPE_SCREEN, "Cart"),
    ],
)
def test_page_and_screen_take_their_name(
    call_type: str, body: dict[str, Any], expected_type: int, name: str
) -> None:
    _, event = parse_call(body, call_type, RECEIVED)
    assert event.type == expected_type
    assert event.name == name


def test_alias_keeps_previous_id() -> None:
    _, event = parse_call({"userId": "u-1", "previousId": "anon-1"}, "alias", RECEIVED)
    assert event.type == events_pb2.EVENT_TYPE_ALIAS
    assert event.previous_id == "anon-1"


def test_group_keeps_group_id() -> None:
    _, event = parse_call(
        {"userId": "u-1", "groupId": "acme", "traits": {"name": "Acme"}}, "group", RECEIVED
    )
    assert event.type == events_pb2.EVENT_TYPE_GROUP
    assert event.group_id == "acme"


def test_ids_are_trimmed() -> None:
    key, event = parse_call({"userId": "  u-1 ", "event": " Signed Up "}, "track", RECEIVED)
    assert key == "u-1"
    assert ids(event) == [("user_id", "u-1")]
    assert event.name == "Signed Up"


def test_without_message_id_a_fresh_uuid_is_used() -> None:
    _, first = parse_call({"userId": "u", "event": "e"}, "track", RECEIVED)
    _, second = parse_call({"userId": "u", "event": "e"}, "track", RECEIVED)
    assert str(uuid.UUID(first.event_id)) == first.event_id
    assert first.event_id != second.event_id


def test_without_timestamp_received_at_is_used() -> None:
    _, event = parse_call({"userId": "u", "event": "e"}, "track", RECEIVED)
    assert event.timestamp.ToDatetime(UTC) == RECEIVED
    assert not event.HasField("sent_at")


def test_original_timestamp_is_the_fallback() -> None:
    _, event = parse_call(
        {"userId": "u", "event": "e", "originalTimestamp": "2024-01-01T00:00:00Z"},
        "track",
        RECEIVED,
    )
    assert event.timestamp.ToDatetime(UTC) == datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250Z", datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_timestamps_are_converted_to_utc(raw: str, expected: datetime) -> None:
    _, event = parse_call({"userId": "u", "event": "e", "timestamp": raw}, "track", RECEIVED)
    assert event.timestamp.ToDatetime(UTC) == expected


def test_endpoint_type_wins_over_body_type() -> None:
    _, event = parse_call({"userId": "u", "type": "track"}, "identify", RECEIVED)
    assert event.type == events_pb2.EVENT_TYPE_IDENTIFY


@pytest.mark.parametrize("body", [[], "track", 42, None, ["userId"]])
def test_non_object_body_is_rejected(body: Any) -> None:
    error = invalid(body)
    assert error.path == "body"
    assert "JSON object" in error.message


@pytest.mark.parametrize("body", [{}, {"userId": "", "anonymousId": "  "}, {"userId": None}])
def test_missing_user_and_anonymous_id_is_rejected(body: dict[str, Any]) -> None:
    error = invalid({**body, "event": "e"})
    assert error.path == "userId"
    assert "userId or anonymousId is required" in error.message


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"userId": 42, "event": "e"}, "userId", "must be a string, got int"),
        ({"anonymousId": ["a"], "event": "e"}, "anonymousId", "must be a string, got list"),
        ({"userId": "u", "event": 7}, "event", "must be a string, got int"),
        ({"userId": "u", "event": "e", "properties": [1]}, "properties", "must be an object"),
        ({"userId": "u", "event": "e", "traits": "gold"}, "traits", "must be an object"),
        ({"userId": "u", "event": "e", "context": 1}, "context", "must be an object"),
        ({"userId": "u", "event": "e", "messageId": 1}, "messageId", "must be a string"),
        ({"userId": "u", "event": "e", "timestamp": "yesterday"}, "timestamp", "ISO-8601"),
        ({"userId": "u", "event": "e", "timestamp": 1714560000}, "timestamp", "must be a string"),
        ({"userId": "u", "event": "e", "sentAt": "2024-13-01T00:00:00Z"}, "sentAt", "ISO-8601"),
        ({"userId": "u" * 513, "event": "e"}, "userId", "longer than 512"),
        ({"userId": "u", "event": "e" * 201}, "event", "longer than 200"),
    ],
)
def test_wrong_types_name_the_field(body: dict[str, Any], path: str, message: str) -> None:
    error = invalid(body)
    assert error.path == path
    assert message in error.message
    assert str(error) == f"{path}: {error.message}"


@pytest.mark.parametrize("body", [{"userId": "u"}, {"userId": "u", "event": "   "}])
def test_track_without_event_is_rejected(body: dict[str, Any]) -> None:
    error = invalid(body)
    assert error.path == "event"
    assert "required for track" in error.message


@pytest.mark.parametrize(
    "body",
    [{"userId": "u"}, {"anonymousId": "a", "previousId": "p"}, {"userId": "u", "previousId": " "}],
)
def test_alias_needs_previous_id_and_user_id(body: dict[str, Any]) -> None:
    assert invalid(body, "alias").path == "previousId"


def test_group_needs_group_id() -> None:
    assert invalid({"userId": "u"}, "group").path == "groupId"


def test_unknown_call_type_is_rejected() -> None:
    error = invalid({"userId": "u", "type": "purchase"}, "")
    assert error.path == "type"
    assert "track" in error.message


def test_oversize_item_is_rejected() -> None:
    body = {"userId": "u", "event": "e", "properties": {"blob": "x" * 2_000}}
    assert parse_call(body, "track", RECEIVED, max_bytes=4_000)[1].name == "e"
    error = invalid(body, max_bytes=1_000)
    assert error.path == "body"
    assert "larger than 1000 bytes" in error.message


def test_item_at_the_size_limit_is_accepted() -> None:
    body = {"userId": "u", "event": "e"}
    size = len(json.dumps(body, separators=(",", ":")))
    assert parse_call(body, "track", RECEIVED, max_bytes=size)[0] == "u"
    assert invalid(body, max_bytes=size - 1).path == "body"


def batch_of(*items: Any, **extra: Any) -> dict[str, Any]:
    return {"batch": list(items), **extra}


def test_batch_is_parsed_in_order() -> None:
    calls = parse_batch(
        batch_of(
            {"type": "identify", "userId": "u-1", "traits": {"email": "a@b.io"}},
            {"type": "track", "anonymousId": "anon-2", "event": "Viewed", "messageId": "m-2"},
            {"type": "page", "userId": "u-3", "name": "Home"},
            {"type": "screen", "userId": "u-4", "name": "Cart"},
            {"type": "alias", "userId": "u-5", "previousId": "anon-5"},
            {"type": "group", "userId": "u-6", "groupId": "g-6"},
        ),
        RECEIVED,
        MAX_EVENT,
    )
    assert [key for key, _ in calls] == ["u-1", "anon-2", "u-3", "u-4", "u-5", "u-6"]
    assert [event.type for _, event in calls] == [
        events_pb2.EVENT_TYPE_IDENTIFY,
        events_pb2.EVENT_TYPE_TRACK,
        events_pb2.EVENT_TYPE_PAGE,
        events_pb2.EVENT_TYPE_SCREEN,
        events_pb2.EVENT_TYPE_ALIAS,
        events_pb2.EVENT_TYPE_GROUP,
    ]
    assert calls[1][1].message_id == "m-2"
    assert ids(calls[0][1]) == [("user_id", "u-1"), ("email", "a@b.io")]


def test_batch_context_merges_into_each_item_the_item_winning() -> None:
    calls = parse_batch(
        batch_of(
            {"type": "track", "userId": "u", "event": "a"},
            {"type": "track", "userId": "u", "event": "b", "context": {"ip": "2.2.2.2"}},
            context={"ip": "1.1.1.1", "traits": {"email": "ctx@example.com"}},
        ),
        RECEIVED,
        MAX_EVENT,
    )
    first, second = (event for _, event in calls)
    assert MessageToDict(first.context)["ip"] == "1.1.1.1"
    assert ("email", "ctx@example.com") in ids(first)
    assert MessageToDict(second.context) == {
        "ip": "2.2.2.2",
        "traits": {"email": "ctx@example.com"},
    }
    assert ids(second) == [("user_id", "u"), ("email", "ctx@example.com")]


@pytest.mark.parametrize("body", [[{"type": "track"}], "batch", None])
def test_batch_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(body, RECEIVED, MAX_EVENT)
    assert raised.value.path == "body"


@pytest.mark.parametrize("body", [{}, {"batch": {"type": "track"}}, {"batch": "x"}])
def test_batch_must_be_an_array(body: Any) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(body, RECEIVED, MAX_EVENT)
    assert raised.value.path == "batch"
    assert "array" in raised.value.message


def test_batch_must_not_be_empty() -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_batch({"batch": []}, RECEIVED, MAX_EVENT)
    assert raised.value.path == "batch"
    assert "empty" in raised.value.message


def test_batch_shared_context_must_be_an_object() -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(batch_of({"type": "track"}, context=[1]), RECEIVED, MAX_EVENT)
    assert raised.value.path == "context"


GOOD = {"type": "track", "userId": "u", "event": "e"}


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"type": "track", "userId": "u"}, "batch[2].event"),
        ({"type": "track", "event": "e"}, "batch[2].userId"),
        ({"userId": "u", "event": "e"}, "batch[2].type"),
        ({"type": "track", "userId": 5, "event": "e"}, "batch[2].userId"),
        ({**GOOD, "properties": []}, "batch[2].properties"),
        ({**GOOD, "timestamp": "soon"}, "batch[2].timestamp"),
        ("not an object", "batch[2]"),
        ({**GOOD, "properties": {"blob": "x" * MAX_EVENT}}, "batch[2]"),
    ],
)
def test_one_bad_item_rejects_the_batch_naming_its_index(bad: Any, path: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(batch_of(GOOD, GOOD, bad, GOOD), RECEIVED, MAX_EVENT)
    assert raised.value.path == path
    assert str(raised.value).startswith(f"{path}: ")


def test_oversize_batch_item_names_the_limit() -> None:
    big = {**GOOD, "properties": {"blob": "x" * 2_000}}
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(batch_of(GOOD, big), RECEIVED, 1_024)
    assert raised.value.path == "batch[1]"
    assert "larger than 1024 bytes" in raised.value.message


def test_batch_item_limit_counts_utf8_bytes_as_sent() -> None:
    # 12,000 three-byte characters: 36 KB of UTF-8 would exceed it, 24 KB must not.
    small = {"type": "track", "userId": "u", "event": "e", "properties": {"t": "é" * 12_000}}
    assert len(parse_batch({"batch": [small]}, RECEIVED, MAX_EVENT)) == 1
    big = {"type": "track", "userId": "u", "event": "e", "properties": {"t": "€" * 12_000}}
    with pytest.raises(InvalidEvent) as raised:
        parse_batch({"batch": [small, big]}, RECEIVED, MAX_EVENT)
    assert raised.value.path == "batch[1]"


def test_batch_shared_context_does_not_count_against_each_item() -> None:
    shared = {"library": {"name": "x" * 20_000}}
    item = {"type": "track", "userId": "u", "event": "e", "properties": {"p": "y" * 20_000}}
    calls = parse_batch({"batch": [item], "context": shared}, RECEIVED, MAX_EVENT)
    assert MessageToDict(calls[0][1].context)["library"]["name"] == "x" * 20_000


def test_deeply_nested_properties_raise_invalid_event() -> None:
    nested: dict[str, Any] = {}
    for _ in range(35):
        nested = {"n": nested}
    error = invalid({"userId": "u", "event": "e", "properties": nested})
    assert error.path == "properties"


def test_batch_items_carry_every_identifier_source() -> None:
    calls = parse_batch(
        batch_of(
            {"type": "identify", "userId": "u-1", "traits": {"phone": "+1555"}},
            {
                "type": "track",
                "anonymousId": "a-2",
                "event": "Pass Added",
                "context": {
                    "device": {"advertisingId": "GAID-2"},
                    **external(ext("wallet_serial", "ser-2")),
                },
            },
        ),
        RECEIVED,
        MAX_EVENT,
    )
    assert [ids(event) for _, event in calls] == [
        [("user_id", "u-1"), ("phone", "+1555")],
        [("anonymous_id", "a-2"), ("device_id", "GAID-2"), ("wallet_serial", "ser-2")],
    ]


def test_batch_shared_context_external_ids_reach_items_without_their_own() -> None:
    own = {**GOOD, "context": external(ext("crm_id", "C-2"))}
    calls = parse_batch(
        batch_of(GOOD, {**GOOD, "context": {}}, own, context=external(ext("crm_id", "C-1"))),
        RECEIVED,
        MAX_EVENT,
    )
    assert [ids(event) for _, event in calls] == [
        [("user_id", "u"), ("crm_id", "C-1")],
        [("user_id", "u"), ("crm_id", "C-1")],
        [("user_id", "u"), ("crm_id", "C-2")],
    ]


@pytest.mark.parametrize(
    ("external_ids", "path"),
    [
        ({"id": "x"}, "batch[1].context.externalIds"),
        ([7], "batch[1].context.externalIds[0]"),
        ([ext("crm_id", None)], "batch[1].context.externalIds[0].id"),
        ([ext("crm_id", "C"), ext("crm_id", "")], "batch[1].context.externalIds[1].id"),
        ([ext("Bad-Type", "x")], "batch[1].context.externalIds[0].type"),
        ([ext("user_id", "u-2")], "batch[1].context.externalIds[0].type"),
    ],
)
def test_bad_external_ids_in_a_batch_item_name_its_index(external_ids: Any, path: str) -> None:
    bad = {**GOOD, "context": {"externalIds": external_ids}}
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(batch_of(GOOD, bad), RECEIVED, MAX_EVENT)
    assert raised.value.path == path
    assert str(raised.value).startswith(f"{path}: ")


def test_bad_shared_external_ids_are_named_where_they_were_sent() -> None:
    shared = external(ext("crm_id", "C-1"), ext("anonymous_id", "a"))
    with pytest.raises(InvalidEvent) as raised:
        parse_batch(batch_of(GOOD, GOOD, context=shared), RECEIVED, MAX_EVENT)
    assert raised.value.path == "context.externalIds[1].type"
    assert "reserved" in raised.value.message


@pytest.mark.parametrize("sdk_type", ["ios.idfa", "android.idfa", "ios.push_token"])
def test_segment_mobile_external_id_types_become_device_ids(sdk_type: str) -> None:
    _, event = parse_call(
        {
            "userId": "u",
            "event": "e",
            "context": {"externalIds": [{"id": "DEV-1", "type": sdk_type, "collection": "users"}]},
        },
        "track",
        RECEIVED,
    )
    assert ("device_id", "DEV-1") in ids(event)
