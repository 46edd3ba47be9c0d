"""Demo data for ``make run``: a handful of customers sent through the real ingest API.

Message ids are fixed, so sending the demo twice changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp

from lodestar.v1 import (
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.platform.rpcauth import blocking_channel

DEMO_CUSTOMERS = (
    ("u-1001", "Ada", "Lovelace", "ada@example.com", "web"),
    ("u-1002", "Grace", "Hopper", "grace@example.com", "app"),
    ("u-1003", "Alan", "Turing", "alan@example.com", "store"),
    ("u-1004", "Katherine", "Johnson", "katherine@example.com", "web"),
    ("u-1005", "Edsger", "Dijkstra", "edsger@example.com", "email"),
    ("u-1006", "Barbara", "Liskov", "barbara@example.com", "app"),
    ("u-1007", "Donald", "Knuth", "donald@example.com", "web"),
    ("u-1008", "Margaret", "Hamilton", "margaret@example.com", "wallet"),
)
PRODUCTS = (
    ("sku-boots", "Trail boots", "shoes", 129.0),
    ("sku-jacket", "Rain jacket", "outerwear", 89.0),
    ("sku-socks", "Wool socks", "accessories", 12.5),
)


def demo_batch() -> list[dict[str, object]]:
    """Identify calls and a few product events per demo customer."""
    calls: list[dict[str, object]] = []
    for n, (user_id, first, last, email, channel) in enumerate(DEMO_CUSTOMERS):
        calls.append(
            {
                "type": "identify",
                "messageId": f"demo-identify-{user_id}",
                "userId": user_id,
                "traits": {"firstName": first, "lastName": last, "email": email},
                "context": {"channel": channel},
            }
        )
        for k in range(n % 3 + 1):
            sku, name, category, price = PRODUCTS[(n + k) % len(PRODUCTS)]
            calls.append(
                {
                    "type": "track",
                    "messageId": f"demo-view-{user_id}-{k}",
                    "userId": user_id,
                    "event": "Product Viewed",
                    "properties": {
                        "product_id": sku,
                        "name": name,
                        "category": category,
                        "price": price,
                    },
                }
            )
        if n % 2 == 0:
            sku, name, category, price = PRODUCTS[n % len(PRODUCTS)]
            calls.append(
                {
                    "type": "track",
                    "messageId": f"demo-order-{user_id}",
                    "userId": user_id,
                    "event": "Order Completed",
                    "properties": {
                        "order_id": f"o-{user_id}",
                        "revenue": price,
                        "currency": "EUR",
                        "products": [{"product_id": sku, "price": price}],
                    },
                }
            )
    # One checkout that never became an order: the abandoned-checkout audience.
    calls.append(
        {
            "type": "track",
            "messageId": "demo-checkout-u-1002",
            "userId": "u-1002",
            "event": "Checkout Started",
            "timestamp": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
            "properties": {"order_id": "o-pending-u-1002", "value": 89.0},
        }
    )
    return calls


ABANDONED_CHECKOUT = {
    "event": "Checkout Started",
    "within_last_days": 30,
    "not_followed_by": {"event": "Order Completed", "within_hours": 48},
}
VALUABLE_AT_RISK = {
    "all": [
        {"field": "scores.p_alive", "op": "lt", "value": 0.3},
        {"field": "orders.revenue", "op": "gt", "value": 500},
    ]
}
DEMO_SEGMENTS = (
    (
        "abandoned-checkout",
        "Abandoned checkout",
        "Started a checkout, no order within 2 days",
        ABANDONED_CHECKOUT,
    ),
    (
        "valuable-at-risk",
        "Valuable customers at risk",
        "Spent over 500 and probably gone",
        VALUABLE_AT_RISK,
    ),
    (
        "shoe-browsers",
        "Shoe browsers",
        "Viewed shoes in the last 7 days and may be e-mailed",
        {
            "all": [
                {
                    "event": "Product Viewed",
                    "where": [{"field": "category", "op": "eq", "value": "shoes"}],
                    "within_last_days": 7,
                },
                {"field": "consent.email_marketing", "op": "ne", "value": "denied"},
            ]
        },
    ),
    ("buyers", "Buyers", "At least one order", {"field": "orders.count", "op": "gte", "value": 1}),
    (
        "gold-members",
        "Gold members",
        "Loyalty tier Gold or Platinum",
        {"field": "loyalty.tier", "op": "in", "value": ["Gold", "Platinum"]},
    ),
)
DEMO_OFFER_ID = "presentation"
# The demo card holder: the wallet story is played with this customer.
WALLET_DEMO_USER = "u-1008"


def create_demo_segments(segmentation_target: str, token: str | None) -> int:
    """Create the demo segments over gRPC (existing ones are left as they are)."""
    created = 0
    with blocking_channel(segmentation_target, token) as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        for segment_id, name, description, rule in DEMO_SEGMENTS:
            request = segmentation_pb2.CreateSegmentRequest(
                id=segment_id, name=name, description=description, rule_json=json.dumps(rule)
            )
            try:
                stub.CreateSegment(request, timeout=10)
                created += 1
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
    return created


def send_demo_data(gateway_url: str, write_key: str) -> int:
    """POST the demo batch; returns the number of calls accepted."""
    calls = demo_batch()
    response = httpx.post(
        f"{gateway_url}/v1/batch", json={"batch": calls}, auth=(write_key, ""), timeout=30
    )
    response.raise_for_status()
    return len(calls)


@dataclass(frozen=True)
class DemoCards:
    """The demo customer's Apple and Google loyalty cards."""

    customer_id: str
    apple: wallet_pb2.WalletPass
    google: wallet_pb2.WalletPass | None


def _known_customer(identity_target: str, token: str | None, user_id: str, timeout_s: float) -> str:
    """The customer id of ``user_id`` once identity has resolved the demo events."""
    deadline = time.monotonic() + timeout_s
    with blocking_channel(identity_target, token) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        while True:
            try:
                found = stub.Lookup(
                    identity_pb2.LookupRequest(
                        identifier=common_pb2.Identifier(type="user_id", value=user_id)
                    ),
                    timeout=5,
                )
                return str(found.customer_id)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)


def create_demo_wallet(
    identity_target: str, wallet_target: str, token: str | None = None
) -> DemoCards:
    """The presentation offer for Gold members, and loyalty cards in Apple and Google Wallet
    for the demo card holder."""
    starts = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=19, minute=0, second=0, microsecond=0
    )
    stamp = Timestamp()
    stamp.FromDatetime(starts)
    customer_id = _known_customer(identity_target, token, WALLET_DEMO_USER, 60)
    with blocking_channel(wallet_target, token) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        wallet.PutOffer(
            wallet_pb2.Offer(
                offer_id=DEMO_OFFER_ID,
                segment_id="gold-members",
                title="Private presentation: 20% off for answering our survey",
                details="Answer our two-minute survey and join the private presentation.",
                survey_url="https://survey.example.com/presentation",
                event=wallet_pb2.OfferEvent(
                    name="Private presentation",
                    venue="Flagship store",
                    latitude=40.4168,
                    longitude=-3.7038,
                    starts_at=stamp,
                ),
            ),
            timeout=10,
        )
        cards = []
        for platform in (wallet_pb2.WALLET_PLATFORM_APPLE, wallet_pb2.WALLET_PLATFORM_GOOGLE):
            try:
                cards.append(
                    wallet.IssuePass(
                        wallet_pb2.IssuePassRequest(
                            customer_id=customer_id,
                            kind=wallet_pb2.PASS_KIND_STORE_CARD,
                            platform=platform,
                        ),
                        timeout=10,
                    )
                )
            except grpc.RpcError as error:
                # Google is refused when real Apple credentials run without Google ones.
                if platform != wallet_pb2.WALLET_PLATFORM_GOOGLE:
                    raise
                print(f"no Google card: {error.details()}", flush=True)
    return DemoCards(customer_id, cards[0], cards[1] if len(cards) > 1 else None)
