"""The short tour printed after the MovieLens demo is loaded: queries to paste, an event to
send, a pass to download, GraphiQL with the dev key, and the wallet story's offer pass."""

from __future__ import annotations

import json

from infra.local.demo_load import FinishResult, LoadResult
from infra.local.movielens import customer_email, customer_user_id

DEMO_USER = "1"
AUDIENCE = "sci-fi-fans"

CUSTOMER_360 = (
    '{ customer(by: {identifier: {type: "email", value: "%s"}}) { id traits '
    "eventCounts { name count } orders { orderCount revenue { currency amount } } "
    "scores { rfmCell recencyDays frequency monetary pAlive clv12m } "
    "segments { segmentId segmentName } recommendations(n: 5) { strategy items { itemId name } } "
    "walletPasses { serialNumber kind platform } } }"
)
AUDIENCE_QUERY = (
    '{ segment(id: "%s") { name size } customers(segment: "%s", first: 5) { totalCount '
    "edges { node { id scores { rfmCell clv12m } } } } }"
)


def _graphql_curl(url: str, api_key: str, query: str) -> str:
    body = json.dumps({"query": query})
    return (
        f"  curl -s -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}' \\\n    {url}/graphql"
    )


def tour(
    *,
    gateway_url: str,
    api_key: str,
    write_key: str,
    loaded: LoadResult,
    finished: FinishResult,
    offer_id: str,
    wallet_customer_id: str = "",
) -> str:
    """The tour text for a loaded stack."""
    event = {
        "userId": customer_user_id(DEMO_USER),
        "event": "Product Rated",
        "properties": {"product_id": "film-50", "rating": 5},
    }
    fresh_link = (
        f'mutation {{ passDownloadUrl(serialNumber: "{finished.passes[0][1]}") '
        "{ url expiresAt } }"
        if finished.passes
        else ""
    )
    passes = ""
    if finished.passes:
        passes = (
            f"\nA pass to download (customer {finished.passes[0][0]}'s loyalty card; the link "
            f"lasts minutes):\n  curl -o card.pkpass '{finished.download_url}'\n"
            "  a fresh link:\n" + _graphql_curl(gateway_url, api_key, fresh_link) + "\n"
        )
    offer = ""
    if wallet_customer_id:
        issue = (
            f'mutation {{ issuePass(customerId: "{wallet_customer_id}", kind: COUPON, '
            f'platform: APPLE, offerId: "{offer_id}") {{ pass {{ serialNumber }} downloadUrl }} }}'
        )
        offer = (
            "\nWallet story, step 3: the offer pass of the presentation offer "
            f'("{offer_id}") for the card holder:\n'
            + _graphql_curl(gateway_url, api_key, issue)
            + "\n"
        )
    return f"""
MovieLens-100k demo: {len(loaded.customers):,} customers, {loaded.catalog_items:,} films,
{loaded.events:,} calls through the ingest API ({loaded.events_per_s:,.0f}/s until the
profiles caught up); model version {finished.model_version}; {finished.customers_scored:,}
customers scored.

Tour
  GraphiQL (in a browser, the dev key in the fragment):
    {gateway_url}/graphql#key={api_key}
  A customer's 360 view ({customer_email(DEMO_USER)}):
{_graphql_curl(gateway_url, api_key, CUSTOMER_360 % customer_email(DEMO_USER))}
  An audience (sci-fi fans; also champions, at-risk, abandoned-checkout):
{_graphql_curl(gateway_url, api_key, AUDIENCE_QUERY % (AUDIENCE, AUDIENCE))}
  Send an event (then ask for the customer again):
  curl -u '{write_key}:' -H 'Content-Type: application/json' \\
    -d '{json.dumps(event)}' \\
    {gateway_url}/v1/track
{passes}{offer}"""
