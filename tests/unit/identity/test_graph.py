"""The identity graph's pure rules: normalising, ordering and resolving identifiers."""

from __future__ import annotations

import uuid

import pytest

from services.identity.graph import (
    IDENTIFIER_TYPES,
    MAX_VALUE_LENGTH,
    IdentifierValue,
    linking_identifiers,
    normalize,
    resolve_batch,
    resolve_customer,
)
from services.platform.errors import InvalidArgument


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalize("email", "  Ada.Lovelace@Example.COM \n") == IdentifierValue(
        "email", "ada.lovelace@example.com"
    )


def test_other_types_are_trimmed_but_keep_case() -> None:
    assert normalize("user_id", "  User-42 ") == IdentifierValue("user_id", "User-42")
    assert normalize("device_id", "ABC") == IdentifierValue("device_id", "ABC")


def test_key_joins_type_and_value() -> None:
    assert normalize("email", "A@B.io").key == "email:a@b.io"


@pytest.mark.parametrize("type_", IDENTIFIER_TYPES)
def test_every_known_type_is_accepted(type_: str) -> None:
    assert normalize(type_, "x@y").type == type_


@pytest.mark.parametrize(
    ("type_", "value", "problem"),
    [
        ("twitter", "@ada", "unknown identifier type 'twitter'"),
        ("Email", "ada@example.com", "unknown identifier type 'Email'"),
        ("user_id", "", "user_id must not be empty"),
        ("phone", "   ", "phone must not be empty"),
        ("email", "ada.example.com", "has no '@'"),
        ("email", "", "has no '@'"),
        ("user_id", "u" * (MAX_VALUE_LENGTH + 1), f"longer than {MAX_VALUE_LENGTH} characters"),
    ],
)
def test_invalid_identifiers_name_the_problem(type_: str, value: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        normalize(type_, value)
    assert problem in str(raised.value)


def test_unknown_type_lists_the_expected_types() -> None:
    with pytest.raises(InvalidArgument, match="expected one of user_id, email"):
        normalize("fax", "1")


def test_value_at_the_length_limit_is_accepted() -> None:
    assert len(normalize("user_id", "u" * MAX_VALUE_LENGTH).value) == MAX_VALUE_LENGTH


def test_length_is_measured_after_trimming() -> None:
    padded = "  " + "u" * MAX_VALUE_LENGTH + "  "
    assert normalize("user_id", padded).value == "u" * MAX_VALUE_LENGTH


def test_linking_identifiers_orders_by_priority() -> None:
    found = linking_identifiers(
        [
            ("anonymous_id", "anon-1"),
            ("device_id", "dev-1"),
            ("email", "ada@example.com"),
            ("wallet_serial", "ser-1"),
            ("user_id", "u-1"),
            ("loyalty_number", "L-1"),
            ("phone", "+3312345678"),
        ]
    )
    assert [i.type for i in found] == list(IDENTIFIER_TYPES)


def test_linking_identifiers_drops_unusable_and_duplicates() -> None:
    found = linking_identifiers(
        [
            ("email", "Ada@Example.com"),
            ("email", " ada@example.com"),
            ("user_id", ""),
            ("email", "not-an-email"),
            ("fax", "123"),
            ("anonymous_id", "anon-1"),
            ("anonymous_id", "anon-1"),
        ]
    )
    assert found == [
        IdentifierValue("email", "ada@example.com"),
        IdentifierValue("anonymous_id", "anon-1"),
    ]


def test_linking_identifiers_orders_same_type_by_value() -> None:
    found = linking_identifiers([("email", "zed@x.io"), ("email", "amy@x.io")])
    assert [i.value for i in found] == ["amy@x.io", "zed@x.io"]


def test_linking_identifiers_of_nothing_usable_is_empty() -> None:
    assert linking_identifiers([("user_id", " "), ("bogus", "x")]) == []
    assert linking_identifiers([]) == []


def test_resolve_picks_the_highest_priority_known_owner() -> None:
    identifiers = linking_identifiers(
        [("anonymous_id", "anon-1"), ("email", "ada@example.com"), ("user_id", "u-1")]
    )
    owners = {"anonymous_id:anon-1": "cust-anon", "email:ada@example.com": "cust-email"}
    # user_id is unknown, so the e-mail's owner wins over the anonymous id's.
    assert resolve_customer(identifiers, owners, "evt-1") == "cust-email"
    owners["user_id:u-1"] = "cust-user"
    assert resolve_customer(identifiers, owners, "evt-1") == "cust-user"


def test_resolve_ignores_owners_of_identifiers_the_event_does_not_carry() -> None:
    identifiers = [IdentifierValue("anonymous_id", "anon-1")]
    owners = {"user_id:u-1": "cust-user", "anonymous_id:anon-1": "cust-anon"}
    assert resolve_customer(identifiers, owners, "evt-1") == "cust-anon"


def test_unknown_identifiers_get_a_deterministic_new_customer() -> None:
    identifiers = [IdentifierValue("email", "new@example.com")]
    first = resolve_customer(identifiers, {}, "evt-1")
    again = resolve_customer(identifiers, {"email:other@example.com": "c"}, "evt-1")
    other = resolve_customer(identifiers, {}, "evt-2")
    assert first == again
    assert first != other
    assert uuid.UUID(first).version == 5
    assert uuid.UUID(other).version == 5


def test_new_customer_id_does_not_depend_on_identifiers() -> None:
    # A redelivered event may be resolved with the same ids in a different order.
    a = resolve_customer([IdentifierValue("user_id", "u")], {}, "evt-9")
    b = resolve_customer([], {}, "evt-9")
    assert a == b


def test_empty_owner_is_not_an_owner() -> None:
    identifiers = [IdentifierValue("user_id", "u-1"), IdentifierValue("email", "a@b.io")]
    owners = {"user_id:u-1": "", "email:a@b.io": "cust-email"}
    assert resolve_customer(identifiers, owners, "evt-1") == "cust-email"


def test_resolve_batch_lets_later_events_see_earlier_links() -> None:
    anon = IdentifierValue("anonymous_id", "a-1")
    user = IdentifierValue("user_id", "u-1")
    first, second, third = resolve_batch(
        [("e1", [anon]), ("e2", [user, anon]), ("e3", [user])], owners={}
    )
    assert first.customer_id == second.customer_id == third.customer_id
    assert first.links == [anon]
    assert second.links == [user, anon]


def test_resolve_batch_never_links_an_identifier_owned_by_someone_else() -> None:
    email = IdentifierValue("email", "ada@example.com")
    user = IdentifierValue("user_id", "u-2")
    (resolution,) = resolve_batch([("e1", [user, email])], owners={email.key: "cust-old"})
    # user_id is unknown, the e-mail belongs to cust-old: the event joins cust-old.
    assert resolution.customer_id == "cust-old"
    assert resolution.links == [user, email]
    other = IdentifierValue("user_id", "u-3")
    (second,) = resolve_batch(
        [("e2", [other, email])], owners={other.key: "cust-b", email.key: "cust-old"}
    )
    assert second.customer_id == "cust-b"
    assert second.links == [other]


def test_needs_write_only_for_new_or_stale_identifiers() -> None:
    from datetime import UTC, datetime, timedelta

    from services.identity.graph import Ownership, needs_write

    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    minute = timedelta(minutes=1)
    assert needs_write(None, now, minute)
    assert not needs_write(Ownership("c", now - timedelta(seconds=59)), now, minute)
    assert needs_write(Ownership("c", now - minute), now, minute)
    assert needs_write(Ownership("c", now), now, timedelta(0))
