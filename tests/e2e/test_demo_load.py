"""The MovieLens demo loader through the front door, on a 50-user slice against the running
platform: customers with their traits, each customer's rated and ordered counts as in the
source files, and a second load that doubles nothing."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.local.connection import write_connection
from infra.local.demo_load import (
    DemoLoadError,
    DemoTarget,
    customer_ids,
    load,
    send_calls,
    wait_caught_up,
)
from infra.local.movielens import Expected, read_source
from infra.local.stack import Stack
from lodestar.v1 import profile_pb2, profile_pb2_grpc, recommendation_pb2, recommendation_pb2_grpc
from services.recommendation.datasets import movielens_dir

pytestmark = pytest.mark.e2e

SLICE = 50
TRAITS_QUERY = """
query Customer($value: String!) {
  customer(by: {identifier: {type: "email", value: $value}}) { id traits }
}
"""


def source_counts(folder: Path, users: int) -> dict[str, tuple[int, int]]:
    """Straight from the files: each of the first ``users`` users' ratings and 4-5 ratings."""
    lines = (folder / "ml-100k.user").read_text().splitlines()[1 : users + 1]
    chosen = {line.split("\t")[0] for line in lines}
    rated: Counter[str] = Counter()
    liked: Counter[str] = Counter()
    for line in (folder / "ml-100k.inter").read_text().splitlines()[1:]:
        user, _item, rating, _at = line.split("\t")
        if user in chosen:
            rated[user] += 1
            liked[user] += float(rating) >= 4
    return {f"ml-user-{u}": (rated[u], liked[u]) for u in chosen}


def counts_of(target: DemoTarget, customers: dict[str, str]) -> dict[str, dict[str, int]]:
    """Each user's profile event counts."""
    with target.channel("profile") as channel:
        response = profile_pb2_grpc.ProfileServiceStub(channel).BatchGetProfiles(
            profile_pb2.BatchGetProfilesRequest(customer_ids=list(customers.values())),
            timeout=30,
        )
    return {
        user: dict(response.profiles[customer].event_counts) for user, customer in customers.items()
    }


def wait_for(check: Any, timeout_s: float, what: str) -> None:
    """Poll ``check`` until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s}s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def demo(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoTarget, Any]:
    """The 50-user slice loaded once for the module."""
    target = write_connection(tmp_path_factory.mktemp("demo"), stack)
    source = read_source(movielens_dir(), SLICE)
    return target, load(source, target, timeout_s=600)


def test_customers_arrive_with_their_traits(demo: tuple[DemoTarget, Any], stack: Stack) -> None:
    target, loaded = demo
    assert len(loaded.customers) == SLICE
    # The first user of ml-100k.user: 24, M, technician, 85711.
    with httpx.Client(timeout=30) as client:
        response = client.post(
            f"{target.gateway_url}/graphql",
            json={"query": TRAITS_QUERY, "variables": {"value": "ml-user-1@example.com"}},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
    body = response.json()
    assert "errors" not in body, body
    traits = body["data"]["customer"]["traits"]
    assert traits["age"] == 24
    assert traits["gender"] == "M"
    assert traits["occupation"] == "technician"
    assert traits["postalCode"] == "85711"
    assert traits["email"] == "ml-user-1@example.com"
    assert body["data"]["customer"]["id"] == loaded.customers["ml-user-1"]


def test_rated_and_ordered_counts_match_the_source(demo: tuple[DemoTarget, Any]) -> None:
    target, loaded = demo
    want = source_counts(movielens_dir(), SLICE)
    counts = counts_of(target, loaded.customers)
    got = {u: (c.get("Product Rated", 0), c.get("Order Completed", 0)) for u, c in counts.items()}
    assert got == want
    # Every film is a catalog item with its price rule (1995 and later: 9.99).
    with target.channel("recommendation") as channel:
        items = recommendation_pb2_grpc.RecommendationServiceStub(channel).GetItems(
            recommendation_pb2.GetItemsRequest(item_ids=["film-1", "film-1682", "film-127"]),
            timeout=30,
        )
    assert items.items["film-1"].name == "Toy Story"
    assert items.items["film-1"].price == 9.99
    assert set(items.items) == {"film-1", "film-1682", "film-127"}


def test_a_second_load_doubles_nothing(demo: tuple[DemoTarget, Any]) -> None:
    target, loaded = demo
    before = counts_of(target, loaded.customers)
    again = load(read_source(movielens_dir(), SLICE), target, timeout_s=600)
    assert again.customers == loaded.customers
    # One new event per customer after the repeated ones: once each is folded, everything
    # sent before it for that customer has been too.
    marker = f"Demo Checked {uuid.uuid4().hex[:8]}"
    send_calls(
        target,
        [
            {"type": "track", "userId": user, "event": marker, "messageId": f"{marker}-{user}"}
            for user in loaded.customers
        ],
    )

    def all_marked() -> bool:
        return all(c.get(marker, 0) == 1 for c in counts_of(target, loaded.customers).values())

    wait_for(all_marked, 600, "the marker event in every profile")
    after = counts_of(target, loaded.customers)
    for user, counts in after.items():
        counts.pop(marker)
        assert counts == before[user], user
    assert customer_ids(target, list(loaded.customers)) == loaded.customers


def test_a_wait_that_times_out_names_who_is_behind(demo: tuple[DemoTarget, Any]) -> None:
    target, _ = demo
    expected = {"ml-user-1": Expected(10**6, 0), "ml-user-never-sent": Expected(1, 0)}
    with pytest.raises(DemoLoadError) as error:
        wait_caught_up(target, expected, timeout_s=0)
    message = str(error.value)
    assert "2 of 2 customers not confirmed" in message
    assert "ml-user-never-sent: not resolved yet" in message
    assert "ml-user-1: Product Rated" in message
