"""The identity rules: defaults, configuration checks, normalising and blocked values."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.identity.rules import (
    BUILT_IN_TYPES,
    DEFAULT_CUSTOM_LIMIT,
    MAX_VALUE_LENGTH,
    IdentityRules,
)
from services.platform.errors import InvalidArgument

EXPECTED_PRIORITY = (
    "user_id",
    "email",
    "phone",
    "loyalty_number",
    "device_id",
    "wallet_serial",
    "anonymous_id",
)


@pytest.fixture
def rules() -> IdentityRules:
    """The default rules (region US)."""
    return IdentityRules.build()


# --- defaults ---------------------------------------------------------------------------------


def test_default_priority_is_user_id_first_and_anonymous_id_last(rules: IdentityRules) -> None:
    assert rules.priority == EXPECTED_PRIORITY
    assert [rules.rank(t) for t in EXPECTED_PRIORITY] == list(range(len(EXPECTED_PRIORITY)))


def test_every_built_in_type_is_ranked(rules: IdentityRules) -> None:
    assert set(BUILT_IN_TYPES) == set(rules.priority)


def test_default_limits(rules: IdentityRules) -> None:
    assert rules.limit("user_id") == 1
    assert rules.limit("email") == 5
    assert rules.limit("phone") == 5
    for type_ in ("loyalty_number", "device_id", "wallet_serial", "anonymous_id"):
        assert rules.limit(type_) >= 10, type_


def test_default_settings(rules: IdentityRules) -> None:
    assert rules.max_customers_per_event == 5
    assert rules.default_region == "US"
    assert rules.pii_types == frozenset({"email", "phone"})


def test_custom_types_rank_just_above_anonymous_id() -> None:
    rules = IdentityRules.build(custom_types=["shopify_id", "klaviyo_id"])
    assert rules.priority == (
        "user_id",
        "email",
        "phone",
        "loyalty_number",
        "device_id",
        "wallet_serial",
        "shopify_id",
        "klaviyo_id",
        "anonymous_id",
    )
    assert rules.rank("wallet_serial") < rules.rank("shopify_id") < rules.rank("anonymous_id")
    assert rules.rank("klaviyo_id") == rules.rank("anonymous_id") - 1


def test_custom_types_get_limit_10() -> None:
    rules = IdentityRules.build(custom_types=["shopify_id"])
    assert DEFAULT_CUSTOM_LIMIT == 10
    assert rules.limit("shopify_id") == 10
    assert rules.limits["shopify_id"] == 10


def test_configured_limits_override_defaults() -> None:
    rules = IdentityRules.build(
        custom_types=["shopify_id"], limits={"email": 2, "user_id": 3, "shopify_id": 1}
    )
    assert rules.limit("email") == 2
    assert rules.limit("user_id") == 3
    assert rules.limit("shopify_id") == 1
    assert rules.limit("phone") == 5


def test_configuration_is_kept() -> None:
    rules = IdentityRules.build(max_customers_per_event=2, default_region="GB")
    assert rules.max_customers_per_event == 2
    assert rules.default_region == "GB"


def test_building_does_not_change_the_defaults() -> None:
    IdentityRules.build(custom_types=["shopify_id"], limits={"email": 1})
    rules = IdentityRules.build()
    assert rules.limit("email") == 5
    assert "shopify_id" not in rules.priority


# --- build() rejects bad configuration ------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["Shopify", "1abc", "a", "has-dash", "has space", "x" * 33, "", "é_id"],
)
def test_build_rejects_bad_custom_type_names(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"custom identifier type {name!r}")):
        IdentityRules.build(custom_types=[name])


@pytest.mark.parametrize("name", BUILT_IN_TYPES)
def test_build_rejects_built_in_names_as_custom_types(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{name!r}")) as raised:
        IdentityRules.build(custom_types=[name])
    assert "built in" in str(raised.value)


def test_build_accepts_the_longest_custom_type_name() -> None:
    name = "x" * 32
    assert name in IdentityRules.build(custom_types=[name]).priority


def test_build_rejects_limits_for_unknown_types() -> None:
    with pytest.raises(ValueError, match="limit for unknown identifier type 'twitter'"):
        IdentityRules.build(limits={"twitter": 3})


def test_build_rejects_limits_for_custom_types_that_are_not_configured() -> None:
    with pytest.raises(ValueError, match="unknown identifier type 'shopify_id'"):
        IdentityRules.build(limits={"shopify_id": 3})


@pytest.mark.parametrize("limit", [0, -1])
def test_build_rejects_limits_below_one(limit: int) -> None:
    with pytest.raises(ValueError, match=f"limit for email must be at least 1, got {limit}"):
        IdentityRules.build(limits={"email": limit})


def test_build_accepts_a_limit_of_one() -> None:
    assert IdentityRules.build(limits={"email": 1}).limit("email") == 1


def test_build_rejects_bad_regexes() -> None:
    with pytest.raises(ValueError, match=re.escape("blocked pattern '(unclosed' is not a regex")):
        IdentityRules.build(blocked_patterns=["(unclosed"])


@pytest.mark.parametrize("count", [1, 0, -3])
def test_build_rejects_fewer_than_two_customers_per_event(count: int) -> None:
    with pytest.raises(ValueError, match="max customers per event must be at least 2"):
        IdentityRules.build(max_customers_per_event=count)


@pytest.mark.parametrize("region", ["XX", "ZZ", "USA", "", "001"])
def test_build_rejects_unknown_phone_regions(region: str) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"default phone region {region!r} is not a region code")
    ):
        IdentityRules.build(default_region=region)


# --- normalize ------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["twitter", "Email", "USER_ID", ""])
def test_normalize_rejects_unknown_types_and_lists_the_valid_ones(
    rules: IdentityRules, type_: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        rules.normalize(type_, "value")
    message = str(raised.value)
    assert f"unknown identifier type {type_!r}" in message
    assert "expected one of " + ", ".join(EXPECTED_PRIORITY) in message


def test_normalize_accepts_configured_custom_types() -> None:
    rules = IdentityRules.build(custom_types=["shopify_id"])
    assert rules.normalize("shopify_id", "  Shop-42 ") == "Shop-42"
    with pytest.raises(InvalidArgument, match="shopify_id"):
        IdentityRules.build().normalize("shopify_id", "Shop-42")


@pytest.mark.parametrize("type_", ["user_id", "device_id", "loyalty_number", "anonymous_id"])
def test_other_types_are_trimmed_but_keep_their_case(rules: IdentityRules, type_: str) -> None:
    assert rules.normalize(type_, " \tUser-42 \n") == "User-42"


def test_email_is_trimmed_and_lower_cased(rules: IdentityRules) -> None:
    assert rules.normalize("email", "  Ada.Lovelace@Example.COM \n") == "ada.lovelace@example.com"


def test_plus_addresses_are_kept_distinct(rules: IdentityRules) -> None:
    plus = rules.normalize("email", "Ada+News@X.com")
    plain = rules.normalize("email", "ada@x.com")
    assert plus == "ada+news@x.com"
    assert plain == "ada@x.com"
    assert plus != plain


@pytest.mark.parametrize(
    "value",
    [
        "ada.example.com",
        "ada@",
        "@x.com",
        "ada@x",
        "ada@x.",
        "ada@.com",
        "a b@x.com",
        "ada@@x.com",
        "ada@x@y.com",
    ],
)
def test_invalid_emails_are_rejected_without_repeating_them(
    rules: IdentityRules, value: str
) -> None:
    with pytest.raises(InvalidArgument, match="email is not a valid address") as raised:
        rules.normalize("email", value)
    assert value not in str(raised.value)


@pytest.mark.parametrize("value", ["(650) 253-0000", "+1 650-253-0000", " 650.253.0000 "])
def test_phones_become_e164_with_the_default_region(rules: IdentityRules, value: str) -> None:
    assert rules.normalize("phone", value) == "+16502530000"


def test_phones_use_the_configured_default_region() -> None:
    gb = IdentityRules.build(default_region="GB")
    assert gb.normalize("phone", "020 7946 0958") == "+442079460958"
    # An explicit country code wins over the default region.
    assert gb.normalize("phone", "+1 650-253-0000") == "+16502530000"


def test_a_national_number_depends_on_the_region() -> None:
    with pytest.raises(InvalidArgument):
        IdentityRules.build(default_region="US").normalize("phone", "020 7946 0958")


@pytest.mark.parametrize(
    "value", ["123", "not a phone", "+1 555", "650 253 000", "ada@example.com", "+44 20"]
)
def test_invalid_phones_are_rejected_without_repeating_them(
    rules: IdentityRules, value: str
) -> None:
    with pytest.raises(InvalidArgument, match=r"^phone ") as raised:
        rules.normalize("phone", value)
    assert value not in str(raised.value)
    assert value.strip() not in str(raised.value)


@pytest.mark.parametrize("type_", ["user_id", "email", "phone", "device_id", "anonymous_id"])
@pytest.mark.parametrize("value", ["", " ", "   \t\n "])
def test_empty_values_are_rejected(rules: IdentityRules, type_: str, value: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{type_} must not be empty$"):
        rules.normalize(type_, value)


@pytest.mark.parametrize("type_", ["user_id", "email", "phone", "device_id"])
def test_values_longer_than_the_maximum_are_rejected(rules: IdentityRules, type_: str) -> None:
    value = "9" * (MAX_VALUE_LENGTH - 6) + "@x.com" + "m"
    assert len(value) == MAX_VALUE_LENGTH + 1
    with pytest.raises(InvalidArgument) as raised:
        rules.normalize(type_, value)
    message = str(raised.value)
    assert f"{type_} is longer than {MAX_VALUE_LENGTH} characters" == message
    assert value not in message


def test_the_maximum_length_is_allowed_and_counted_after_trimming(rules: IdentityRules) -> None:
    assert MAX_VALUE_LENGTH == 512
    value = "u" * MAX_VALUE_LENGTH
    assert rules.normalize("user_id", value) == value
    assert rules.normalize("user_id", f"  {value}\n") == value
    long_email = "a" * (MAX_VALUE_LENGTH - len("@x.com")) + "@X.com"
    assert rules.normalize("email", long_email) == long_email.lower()


@given(
    local=st.from_regex(r"[A-Za-z0-9._+-]{1,20}", fullmatch=True),
    domain=st.from_regex(r"[A-Za-z0-9-]{1,15}\.[A-Za-z]{2,6}", fullmatch=True),
    padding=st.sampled_from(["", " ", "\t", " \n"]),
)
def test_email_normalising_is_idempotent_and_case_insensitive(
    local: str, domain: str, padding: str
) -> None:
    rules = IdentityRules.build()
    value = f"{padding}{local}@{domain}{padding}"
    once = rules.normalize("email", value)
    assert once == f"{local}@{domain}".lower()
    assert rules.normalize("email", once) == once
    assert rules.normalize("email", value.upper()) == once


# --- is_blocked -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "00000000-0000-0000-0000-000000000000",
        "0",
        "",
        "null",
        "NULL",
        "undefined",
        "anonymous",
        "test@test.com",
        "TEST@Test.com",
        "noreply@shop.com",
        "no-reply@shop.com",
        "none",
        "n/a",
        "-1",
    ],
)
def test_default_patterns_block_placeholders(rules: IdentityRules, value: str) -> None:
    assert rules.is_blocked(value)


@pytest.mark.parametrize(
    "value",
    [
        "ada@example.com",
        "u-123",
        "10",
        "nullable",
        "test@example.com",
        "reply@shop.com",
        "anonymous-42",
        "+16502530000",
        "6f1c2a9e-0000-0000-0000-000000000000",
    ],
)
def test_default_patterns_let_real_values_through(rules: IdentityRules, value: str) -> None:
    assert not rules.is_blocked(value)


def test_configured_patterns_are_added_to_the_defaults() -> None:
    rules = IdentityRules.build(blocked_patterns=[r"^guest-\d+$", r"@example\.org$"])
    assert rules.is_blocked("guest-42")
    assert rules.is_blocked("ada@example.org")
    assert rules.is_blocked("null")
    assert rules.is_blocked("00000000-0000-0000-0000-000000000000")
    assert not rules.is_blocked("u-123")
    assert not rules.is_blocked("guest-x")
    assert not IdentityRules.build().is_blocked("guest-42")
