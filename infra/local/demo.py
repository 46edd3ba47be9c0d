"""Demo data for ``make run``: a handful of customers sent through the real ingest API.

Message ids are fixed, so sending the demo twice changes nothing.
"""

from __future__ import annotations

import httpx

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
    return calls


def send_demo_data(gateway_url: str, write_key: str) -> int:
    """POST the demo batch; returns the number of calls accepted."""
    calls = demo_batch()
    response = httpx.post(
        f"{gateway_url}/v1/batch", json={"batch": calls}, auth=(write_key, ""), timeout=30
    )
    response.raise_for_status()
    return len(calls)
