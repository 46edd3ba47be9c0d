"""The identity graph's resolution over an in-memory view, and the last-seen write throttle."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.identity.graph import (
    CustomerNode,
    Decision,
    GraphIdentifier,
    GraphView,
    needs_write,
    new_customer_id,
)
from services.identity.rules import BUILT_IN_TYPES, IdentityRules

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ident(key: str) -> GraphIdentifier:
    """An identifier whose type is the part of ``key`` before the colon."""
    return GraphIdentifier(key.split(":", 1)[0], key)


def customer(
    customer_id: str, *keys: str, created_at: datetime = T0, version: int = 3
) -> CustomerNode:
    """A stored customer holding ``keys``."""
    return CustomerNode(customer_id, created_at, version, identifiers={k: ident(k) for k in keys})


def make_view(*nodes: CustomerNode, rules: IdentityRules | None = None) -> GraphView:
    """A view with ``nodes`` loaded in full."""
    view = GraphView(rules or IdentityRules.build())
    for node in nodes:
        view.add_customer(node)
    return view


def resolve(view: GraphView, event_id: str, *keys: str, at: datetime = T0) -> Decision:
    """Resolve an event carrying ``keys``."""
    return view.resolve(event_id, [ident(k) for k in keys], at)


def keys_of(view: GraphView, customer_id: str) -> set[str]:
    """The keys a customer of the view holds."""
    return set(view.customers[customer_id].identifiers)


def assert_consistent(view: GraphView) -> None:
    """Every key has exactly one holder and ``owners`` agrees with the customers."""
    holders: dict[str, list[str]] = {}
    for customer_id, node in view.customers.items():
        assert node.customer_id == customer_id
        for key in node.identifiers:
            holders.setdefault(key, []).append(customer_id)
    for key, customer_ids in holders.items():
        assert len(customer_ids) == 1, f"{key} held by {customer_ids}"
        assert view.owner(key) == customer_ids[0]
    assert set(view.owners) == set(holders)


# --- no owner: a new customer ---------------------------------------------------------------


def test_an_event_with_unknown_identifiers_creates_a_customer() -> None:
    view = make_view()
    at = T0 + timedelta(hours=5)
    decision = resolve(view, "evt-1", "email:e1", "anonymous_id:a1", "user_id:u1", at=at)
    expected_id = new_customer_id("evt-1", ["user_id:u1", "email:e1", "anonymous_id:a1"])
    assert decision.event_id == "evt-1"
    assert decision.customer_id == expected_id
    assert decision.created is True
    assert decision.merged == []
    assert decision.conflicts == []
    # Strongest first.
    assert decision.attached == [ident("user_id:u1"), ident("email:e1"), ident("anonymous_id:a1")]
    node = view.customers[expected_id]
    assert node.is_new is True
    assert node.created_at == at
    assert set(node.identifiers) == {"email:e1", "anonymous_id:a1", "user_id:u1"}
    for key in ("email:e1", "anonymous_id:a1", "user_id:u1"):
        assert view.owner(key) == expected_id
    assert_consistent(view)


def test_duplicate_identifiers_in_an_event_are_attached_once() -> None:
    view = make_view()
    decision = resolve(view, "evt-1", "device_id:d1", "device_id:d1")
    assert decision.attached == [ident("device_id:d1")]
    assert len(view.customers[decision.customer_id].identifiers) == 1


def test_new_customer_ids_are_deterministic_per_event_id_and_identifiers() -> None:
    first = resolve(make_view(), "evt-42", "email:e1", "device_id:d9")
    again = resolve(make_view(), "evt-42", "device_id:d9", "email:e1", "email:e1")
    other = resolve(make_view(), "evt-43", "email:e1", "device_id:d9")
    assert first.customer_id == again.customer_id
    assert first.customer_id == new_customer_id("evt-42", ["email:e1", "device_id:d9"])
    assert first.customer_id != other.customer_id
    assert str(uuid.UUID(first.customer_id)) == first.customer_id


def test_a_reused_event_id_with_other_identifiers_never_joins_the_first_customer() -> None:
    # Event ids come from clients' message ids: a second person's first event may reuse one.
    view = make_view()
    first = resolve(view, "evt-42", "user_id:u1", "email:e1")
    second = resolve(view, "evt-42", "user_id:u2", "email:e2")
    assert second.created is True
    assert second.customer_id != first.customer_id
    assert view.owner("user_id:u1") == first.customer_id
    assert view.owner("user_id:u2") == second.customer_id
    assert set(view.customers[first.customer_id].identifiers) == {"user_id:u1", "email:e1"}
    assert_consistent(view)


def test_a_redelivered_event_resolves_to_the_customer_it_created() -> None:
    view = make_view()
    first = resolve(view, "evt-1", "email:e1", "device_id:d1")
    again = resolve(view, "evt-1", "email:e1", "device_id:d1")
    assert again.customer_id == first.customer_id
    assert again.created is False
    assert again.attached == []
    assert again.merged == []
    assert len(view.customers) == 1


# --- one owner: attach ----------------------------------------------------------------------


def test_an_event_with_one_owner_attaches_its_new_identifiers() -> None:
    view = make_view(customer("c1", "email:e1"), customer("c2", "email:e2"))
    decision = resolve(view, "evt-1", "anonymous_id:a1", "email:e1", "device_id:d1")
    assert decision.customer_id == "c1"
    assert decision.created is False
    assert decision.merged == []
    assert decision.conflicts == []
    assert decision.attached == [ident("device_id:d1"), ident("anonymous_id:a1")]
    assert keys_of(view, "c1") == {"email:e1", "device_id:d1", "anonymous_id:a1"}
    assert keys_of(view, "c2") == {"email:e2"}
    assert view.owner("device_id:d1") == "c1"
    assert view.owner("anonymous_id:a1") == "c1"
    assert_consistent(view)


def test_an_event_with_only_known_identifiers_changes_nothing() -> None:
    view = make_view(customer("c1", "email:e1", "device_id:d1"))
    decision = resolve(view, "evt-1", "device_id:d1", "email:e1")
    assert decision.customer_id == "c1"
    assert decision.created is False
    assert decision.attached == []
    assert decision.merged == []
    assert decision.conflicts == []
    assert keys_of(view, "c1") == {"email:e1", "device_id:d1"}
    assert view.customers["c1"].version == 3


# --- several owners: merge into the oldest --------------------------------------------------


def test_several_owners_merge_into_the_oldest() -> None:
    view = make_view(
        customer("c-young", "email:e1", "phone:p9", created_at=T0 + timedelta(days=2)),
        customer("c-old", "device_id:d1", created_at=T0),
        customer("c-mid", "anonymous_id:a1", created_at=T0 + timedelta(days=1)),
        customer("c-other", "email:e7", created_at=T0 - timedelta(days=9)),
    )
    decision = resolve(
        view, "evt-1", "email:e1", "device_id:d1", "anonymous_id:a1", "loyalty_number:l1"
    )
    assert decision.customer_id == "c-old"
    assert decision.created is False
    assert decision.merged == ["c-mid", "c-young"]
    assert decision.conflicts == []
    assert decision.attached == [ident("loyalty_number:l1")]
    assert "c-young" not in view.customers
    assert "c-mid" not in view.customers
    survivor_keys = {
        "email:e1",
        "phone:p9",
        "device_id:d1",
        "anonymous_id:a1",
        "loyalty_number:l1",
    }
    assert keys_of(view, "c-old") == survivor_keys
    for key in survivor_keys:
        assert view.owner(key) == "c-old"
    assert view.owner("email:e7") == "c-other"
    assert set(view.owners.values()) == {"c-old", "c-other"}
    assert_consistent(view)


def test_merge_ties_on_created_at_go_to_the_smallest_id() -> None:
    view = make_view(
        customer("c2", "email:e2"), customer("c3", "email:e3"), customer("c1", "device_id:d1")
    )
    decision = resolve(view, "evt-1", "email:e3", "email:e2", "device_id:d1")
    assert decision.customer_id == "c1"
    assert decision.merged == ["c2", "c3"]
    assert keys_of(view, "c1") == {"email:e2", "email:e3", "device_id:d1"}
    assert_consistent(view)


# --- later events of a batch see earlier ones -----------------------------------------------


def test_later_events_in_a_view_see_earlier_links() -> None:
    view = make_view()
    anonymous = resolve(view, "evt-1", "anonymous_id:a1", at=T0)
    identify = resolve(view, "evt-2", "anonymous_id:a1", "user_id:u1", at=T0 + timedelta(1))
    other_device = resolve(view, "evt-3", "user_id:u1", "anonymous_id:a2", at=T0 + timedelta(2))
    assert anonymous.created is True
    assert identify.created is False
    assert other_device.created is False
    assert anonymous.customer_id == identify.customer_id == other_device.customer_id
    assert identify.attached == [ident("user_id:u1")]
    assert other_device.attached == [ident("anonymous_id:a2")]
    assert list(view.customers) == [anonymous.customer_id]
    assert keys_of(view, anonymous.customer_id) == {
        "anonymous_id:a1",
        "user_id:u1",
        "anonymous_id:a2",
    }


def test_an_identify_merges_two_anonymous_customers_of_the_batch() -> None:
    view = make_view()
    first = resolve(view, "evt-1", "anonymous_id:a1", at=T0)
    second = resolve(view, "evt-2", "anonymous_id:a2", at=T0 + timedelta(minutes=1))
    assert first.customer_id != second.customer_id
    resolve(view, "evt-3", "user_id:u1", "anonymous_id:a1", at=T0 + timedelta(minutes=2))
    merge = resolve(view, "evt-4", "user_id:u1", "anonymous_id:a2", at=T0 + timedelta(minutes=3))
    assert merge.customer_id == first.customer_id
    assert merge.merged == [second.customer_id]
    assert list(view.customers) == [first.customer_id]
    assert_consistent(view)


# --- limits ---------------------------------------------------------------------------------


def test_a_second_user_id_drops_the_shared_anonymous_id() -> None:
    view = make_view(customer("c1", "user_id:u1", "anonymous_id:a1"))
    decision = resolve(view, "evt-1", "user_id:u2", "anonymous_id:a1")
    assert decision.created is True
    assert decision.customer_id == new_customer_id("evt-1", ["user_id:u2", "anonymous_id:a1"])
    assert decision.customer_id != "c1"
    assert decision.attached == [ident("user_id:u2")]
    assert decision.merged == []
    assert [c.identifier for c in decision.conflicts] == [ident("anonymous_id:a1")]
    assert "user_id" in decision.conflicts[0].reason
    assert keys_of(view, "c1") == {"user_id:u1", "anonymous_id:a1"}
    assert keys_of(view, decision.customer_id) == {"user_id:u2"}
    assert view.owner("anonymous_id:a1") == "c1"
    assert_consistent(view)


def test_an_email_beyond_the_limit_is_dropped() -> None:
    emails = [f"email:e{n}" for n in range(1, 6)]
    view = make_view(customer("c1", "user_id:u1", *emails))
    decision = resolve(view, "evt-1", "user_id:u1", "email:e6")
    assert decision.customer_id == "c1"
    assert decision.created is False
    assert decision.attached == []
    assert decision.merged == []
    assert [c.identifier for c in decision.conflicts] == [ident("email:e6")]
    assert "email" in decision.conflicts[0].reason
    assert "5" in decision.conflicts[0].reason
    assert view.owner("email:e6") is None
    assert keys_of(view, "c1") == {"user_id:u1", *emails}


def test_two_new_user_ids_keep_only_the_first() -> None:
    view = make_view()
    decision = resolve(view, "evt-1", "user_id:u2", "user_id:u1")
    assert decision.created is True
    assert decision.attached == [ident("user_id:u1")]
    assert [c.identifier for c in decision.conflicts] == [ident("user_id:u2")]
    assert "user_id" in decision.conflicts[0].reason
    assert view.owner("user_id:u2") is None


def test_an_email_link_between_two_user_ids_is_dropped_and_nothing_merges() -> None:
    view = make_view(
        customer("c1", "user_id:u1", "email:e1", created_at=T0),
        customer("c2", "user_id:u2", created_at=T0 + timedelta(days=1)),
    )
    decision = resolve(view, "evt-1", "user_id:u2", "email:e1")
    assert decision.customer_id == "c2"
    assert decision.created is False
    assert decision.merged == []
    assert decision.attached == []
    assert [c.identifier for c in decision.conflicts] == [ident("email:e1")]
    assert "user_id" in decision.conflicts[0].reason
    assert set(view.customers) == {"c1", "c2"}
    assert keys_of(view, "c1") == {"user_id:u1", "email:e1"}
    assert keys_of(view, "c2") == {"user_id:u2"}
    assert_consistent(view)


def test_configured_limits_apply_when_merging() -> None:
    rules = IdentityRules.build(limits={"device_id": 2})
    view = make_view(
        customer("c1", "email:e1", "device_id:d1", created_at=T0),
        customer("c2", "email:e2", "device_id:d2", "device_id:d3"),
        rules=rules,
    )
    decision = resolve(view, "evt-1", "email:e1", "email:e2")
    assert decision.merged == []
    assert [c.identifier for c in decision.conflicts] == [ident("email:e2")]
    assert "device_id" in decision.conflicts[0].reason
    assert set(view.customers) == {"c1", "c2"}


def test_a_customer_above_a_lowered_limit_keeps_its_identifiers() -> None:
    rules = IdentityRules.build(limits={"email": 2})
    emails = ["email:e1", "email:e2", "email:e3", "email:e4"]
    view = make_view(customer("c1", "user_id:u1", *emails), rules=rules)
    decision = resolve(view, "evt-1", "user_id:u1", *emails)
    assert decision.customer_id == "c1"
    assert decision.created is False
    assert decision.attached == []
    assert decision.merged == []
    assert decision.conflicts == []
    assert keys_of(view, "c1") == {"user_id:u1", *emails}


def test_a_customer_above_a_lowered_limit_does_not_grow() -> None:
    rules = IdentityRules.build(limits={"email": 2})
    emails = ["email:e1", "email:e2", "email:e3", "email:e4"]
    view = make_view(customer("c1", "user_id:u1", *emails), rules=rules)
    decision = resolve(view, "evt-1", "user_id:u1", "email:e9")
    assert decision.customer_id == "c1"
    assert decision.attached == []
    assert [c.identifier for c in decision.conflicts] == [ident("email:e9")]
    assert "limit of 2 email" in decision.conflicts[0].reason
    assert keys_of(view, "c1") == {"user_id:u1", *emails}


# --- max customers per event ----------------------------------------------------------------


def test_an_event_linking_too_many_customers_drops_the_weakest_link() -> None:
    rules = IdentityRules.build(max_customers_per_event=3)
    view = make_view(
        customer("c1", "email:e1", created_at=T0),
        customer("c2", "phone:p1", created_at=T0 + timedelta(days=1)),
        customer("c3", "device_id:d1", created_at=T0 + timedelta(days=2)),
        customer("c4", "anonymous_id:a1", created_at=T0 - timedelta(days=1)),
        rules=rules,
    )
    decision = resolve(view, "evt-1", "anonymous_id:a1", "device_id:d1", "phone:p1", "email:e1")
    assert decision.customer_id == "c1"
    assert decision.merged == ["c2", "c3"]
    assert [c.identifier for c in decision.conflicts] == [ident("anonymous_id:a1")]
    assert "more than 3 customers" in decision.conflicts[0].reason
    assert set(view.customers) == {"c1", "c4"}
    assert view.owner("anonymous_id:a1") == "c4"
    assert keys_of(view, "c1") == {"email:e1", "phone:p1", "device_id:d1"}
    assert_consistent(view)


def test_every_link_to_a_customer_over_the_maximum_is_dropped() -> None:
    rules = IdentityRules.build(max_customers_per_event=3)
    view = make_view(
        customer("c1", "email:e1"),
        customer("c2", "phone:p1"),
        customer("c3", "device_id:d1"),
        customer("c4", "anonymous_id:a1", "anonymous_id:a2"),
        rules=rules,
    )
    decision = resolve(
        view,
        "evt-1",
        "email:e1",
        "phone:p1",
        "device_id:d1",
        "anonymous_id:a1",
        "anonymous_id:a2",
        "wallet_serial:w1",
    )
    assert sorted(c.identifier.key for c in decision.conflicts) == [
        "anonymous_id:a1",
        "anonymous_id:a2",
    ]
    assert len(decision.merged) + 1 == 3
    assert decision.attached == [ident("wallet_serial:w1")]
    assert keys_of(view, "c4") == {"anonymous_id:a1", "anonymous_id:a2"}
    assert_consistent(view)


@pytest.mark.parametrize("maximum", [2, 3, 4, 5])
def test_at_most_the_maximum_number_of_customers_are_combined(maximum: int) -> None:
    types = ["email", "phone", "loyalty_number", "device_id", "wallet_serial", "anonymous_id"]
    rules = IdentityRules.build(max_customers_per_event=maximum)
    view = make_view(
        *(
            customer(f"c{n}", f"{type_}:x", created_at=T0 + timedelta(days=n))
            for n, type_ in enumerate(types)
        ),
        rules=rules,
    )
    decision = resolve(view, "evt-1", *(f"{t}:x" for t in reversed(types)))
    assert decision.customer_id == "c0"
    assert decision.merged == [f"c{n}" for n in range(1, maximum)]
    assert [c.identifier.type for c in decision.conflicts] == types[maximum:][::-1]
    assert len(view.customers) == len(types) - maximum + 1
    assert_consistent(view)


# --- property: with generous limits, customers are connected components --------------------

POOL = [
    GraphIdentifier(type_, f"{type_}:{n}")
    for type_, n in zip(list(BUILT_IN_TYPES) * 2, range(14), strict=True)
]
GENEROUS = IdentityRules.build(
    limits=dict.fromkeys(BUILT_IN_TYPES, 1000), max_customers_per_event=1000
)


def components(events: Sequence[Sequence[GraphIdentifier]]) -> dict[str, str]:
    """Union-find over 'appear in the same event': each key's representative."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for event in events:
        for identifier in event:
            find(identifier.key)
        for left, right in itertools.pairwise(event):
            parent[find(left.key)] = find(right.key)
    return {key: find(key) for key in parent}


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.lists(st.sampled_from(POOL), min_size=1, max_size=4), min_size=1, max_size=12
    ),
    created=st.lists(st.integers(min_value=0, max_value=3), min_size=12, max_size=12),
)
def test_generous_limits_make_customers_the_connected_components(
    events: list[list[GraphIdentifier]], created: list[int]
) -> None:
    view = GraphView(GENEROUS)
    for n, event in enumerate(events):
        decision = view.resolve(f"evt-{n}", event, T0 + timedelta(minutes=created[n]))
        assert decision.conflicts == []
        assert all(view.owner(i.key) == decision.customer_id for i in event)
    assert_consistent(view)
    expected = components(events)
    assert set(view.owners) == set(expected)
    for left in expected:
        for right in expected:
            same_component = expected[left] == expected[right]
            same_customer = view.owner(left) == view.owner(right)
            assert same_component == same_customer, (left, right)
    assert len(view.customers) == len(set(expected.values()))


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.lists(st.sampled_from(POOL), min_size=1, max_size=5), min_size=1, max_size=15
    ),
    maximum=st.integers(min_value=2, max_value=4),
)
def test_default_limits_are_never_exceeded(
    events: list[list[GraphIdentifier]], maximum: int
) -> None:
    rules = IdentityRules.build(
        limits={"email": 1, "phone": 2, "device_id": 1}, max_customers_per_event=maximum
    )
    view = GraphView(rules)
    for n, event in enumerate(events):
        decision = view.resolve(f"evt-{n}", event, T0 + timedelta(minutes=n))
        assert len(decision.merged) < maximum
        dropped = {c.identifier for c in decision.conflicts}
        assert dropped <= set(event)
        for identifier in set(event) - dropped:
            assert view.owner(identifier.key) == decision.customer_id
        for node in view.customers.values():
            for type_, count in node.counts().items():
                assert count <= rules.limit(type_), (node.customer_id, type_)
    assert_consistent(view)


# --- needs_write ----------------------------------------------------------------------------

MINUTE = timedelta(minutes=1)


def test_a_never_seen_identifier_needs_a_write() -> None:
    assert needs_write(None, T0, MINUTE)


def test_within_the_resolution_no_write_is_needed() -> None:
    assert not needs_write(T0, T0, MINUTE)
    assert not needs_write(T0, T0 + timedelta(seconds=59, microseconds=999_999), MINUTE)


def test_at_or_after_the_resolution_a_write_is_needed() -> None:
    assert needs_write(T0, T0 + MINUTE, MINUTE)
    assert needs_write(T0, T0 + timedelta(days=3), MINUTE)


@pytest.mark.parametrize("later", [timedelta(0), timedelta(microseconds=1), timedelta(hours=1)])
def test_a_zero_resolution_always_writes(later: timedelta) -> None:
    assert needs_write(T0, T0 + later, timedelta(0))
    assert needs_write(None, T0 + later, timedelta(0))


def test_only_the_link_that_detaches_a_customer_is_recorded_as_a_conflict() -> None:
    view = make_view(
        customer("c1", "user_id:u1", "anonymous_id:a1"),
        customer("c2", "user_id:u2", "email:e2", created_at=T0 + timedelta(hours=1)),
    )
    decision = resolve(view, "e", "user_id:u1", "email:e2", "anonymous_id:a1")
    assert decision.customer_id == "c1"
    assert [c.identifier.key for c in decision.conflicts] == ["email:e2"]
    assert decision.merged == []


def test_at_equal_priority_a_new_identifier_goes_before_a_link() -> None:
    emails = [f"email:z{n}" for n in range(1, 6)]
    view = make_view(customer("c1", *emails))
    # "email:a0" sorts before "email:z1": the key must not decide; the new one is dropped.
    decision = resolve(view, "e", "email:z1", "email:a0")
    assert decision.customer_id == "c1"
    assert [c.identifier.key for c in decision.conflicts] == ["email:a0"]
