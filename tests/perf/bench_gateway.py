"""Gateway benchmark (``make bench``): the GraphQL gateway against the floor of a bare Starlette
handler that makes the same gRPC calls with the same stubs and returns JSON, side by side in
the same run, on the local stack (free ports) with 1,000 customers loaded through the ingest
API (identify with traits, track and ``Order Completed`` events, one segment, a few passes).

Phases, each ``--seconds`` long with ``--clients`` concurrent clients for a and b and
``--audience-clients`` for c and d (5 by default: 50 pages of 50 customers at once outlast
the services' 5 s deadline on 2 cores); a comma-separated list (e.g. ``--clients 10,50``)
measures each count in turn:

a. the full 360-degree query (every field of ``customer``) for a random one of the customers;
b. the bare handler making the same calls for the same customers: BatchGetIdentities and
   BatchGetProfiles (the lookup), then BatchListTimeline (the timeline and the order history
   in one call), BatchListCustomerGroups, MembershipsFor, GetScores, BatchRecommend and
   ListPasses, with the requests ``gateway/loaders.py`` makes;
c. ``customers(segment:, first: 50)`` with the full customer under each node (only when the
   schema has it: detected by introspection);
d. the bare handler making the same calls: Members, then the same batch calls over the 50
   ids at once.

Prints JSON lines with the machine's core count: requests/s, p50/p95/p99 (ms), errors, and the
server process's CPU milliseconds per request (``/proc/<pid>/stat`` utime + stime around the
phase) for each side, then the ratio gateway/bare against the targets (>= 0.6x the bare
handler's requests/s, p95 <= 100 ms for one customer) and the latency the gateway adds over
the floor at the same load (on a small machine the services the two sides share bound both
p95s at high concurrency). Nothing is asserted.

``--profile PATH`` then runs phase a once more against a gateway under cProfile and prints
where its CPU goes (pstats saved at PATH). ``--serve-bare`` runs the bare handler itself (the
benchmark starts it as its own process, like the gateway, with uvicorn).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "protos")]

from google.protobuf.json_format import MessageToDict  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from motor.motor_asyncio import AsyncIOMotorClient  # noqa: E402

from infra.local.servers import ManagedProcess, free_port, wait_until  # noqa: E402
from infra.local.stack import Stack, StackPorts, http_ok  # noqa: E402
from lodestar.v1 import (  # noqa: E402
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    recommendation_pb2,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.platform.mongo import Document  # noqa: E402
from tests.perf.costs import CLOCK_TICKS, cpu_ticks, pid_of, stack_pids  # noqa: E402
from tests.support.platform import UNLIMITED_INGEST  # noqa: E402

SEGMENT_ID = "bench-buyers"
TIMELINE_FIRST = 20
# The page of groups the full view asks (every ``first`` of the view is TIMELINE_FIRST).
GROUPS_FIRST = TIMELINE_FIRST
RECOMMENDATIONS_N = 10
AUDIENCE_FIRST = 50
# Targets of the issue: gateway requests/s at least this share of the bare handler's, and
# the one-customer p95 at most this many milliseconds.
TARGET_RATIO = 0.6
TARGET_P95_MS = 100.0


def emit(record: dict[str, object]) -> None:
    """One JSON line, with the core count on every line."""
    print(json.dumps({"cores": os.cpu_count(), **record}), flush=True)


# --- The data -------------------------------------------------------------------------------


def customer_calls(n: int) -> list[dict[str, Any]]:
    """One customer's calls: identify with traits, product views, and (every other customer)
    an order."""
    user = f"bench-{n}"
    calls: list[dict[str, Any]] = [
        {
            "type": "identify",
            "userId": user,
            "messageId": f"{user}-identify",
            "traits": {
                "email": f"{user}@example.com",
                "name": f"Bench Customer {n}",
                "plan": ("free", "pro", "team")[n % 3],
                "city": ("Madrid", "Lyon", "Porto", "Turin")[n % 4],
            },
        }
    ]
    for k in range(3):
        calls.append(
            {
                "type": "track",
                "userId": user,
                "event": "Product Viewed",
                "messageId": f"{user}-view-{k}",
                "properties": {"product_id": f"sku-{(n + k) % 40}", "category": "shoes"},
            }
        )
    if n % 2 == 0:
        calls.append(
            {
                "type": "track",
                "userId": user,
                "event": "Order Completed",
                "messageId": f"{user}-order",
                "properties": {
                    "order_id": f"{user}-o1",
                    "total": 40 + n % 200,
                    "currency": "EUR",
                    "products": [
                        {"product_id": f"sku-{n % 40}", "price": 40 + n % 200, "quantity": 1}
                    ],
                },
            }
        )
    return calls


async def load_customers(stack: Stack, client: httpx.AsyncClient, customers: int) -> None:
    """Every customer's calls through ``/v1/batch``, then wait until the profiles show them."""
    calls = [call for n in range(customers) for call in customer_calls(n)]
    batches = [calls[i : i + 200] for i in range(0, len(calls), 200)]
    for batch in batches:
        response = await client.post(
            f"{stack.gateway_url}/v1/batch", json={"batch": batch}, auth=(stack.write_key, "")
        )
        response.raise_for_status()
    mongo: AsyncIOMotorClient[Document] = AsyncIOMotorClient(stack.mongo_uri_for("profile"))
    profiles = mongo["lodestar_profile"]["profiles"]
    try:
        deadline = time.monotonic() + 300
        while await profiles.count_documents({"event_counts.Product Viewed": 3}) < customers:
            if time.monotonic() > deadline:
                raise TimeoutError("the profiles did not reflect the loaded events in 300 s")
            await asyncio.sleep(0.5)
    finally:
        mongo.close()


async def customer_ids(stack: Stack, customers: int) -> list[str]:
    """The customer ids of the loaded users."""
    channel = stack.grpc_channel("identity")
    try:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        ids: list[str] = []
        for start in range(0, customers, 500):
            reply = await identity.BatchLookup(
                identity_pb2.BatchLookupRequest(
                    identifiers=[
                        common_pb2.Identifier(type="user_id", value=f"bench-{n}")
                        for n in range(start, min(start + 500, customers))
                    ]
                )
            )
            ids.extend(r.customer_id for r in reply.results if r.customer_id)
        return ids
    finally:
        await channel.close()


async def segment_and_passes(stack: Stack, ids: list[str], passes: int) -> int:
    """The buyers segment (waits until it is live) and a few loyalty passes; the segment's
    size."""
    channel = stack.grpc_channel("segmentation")
    wallet_channel = stack.grpc_channel("wallet")
    try:
        segmentation = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        rule = {"field": "orders.count", "op": "gte", "value": 1}
        await segmentation.CreateSegment(
            segmentation_pb2.CreateSegmentRequest(
                id=SEGMENT_ID, name="Bench buyers", rule_json=json.dumps(rule)
            )
        )
        wallet = wallet_pb2_grpc.WalletServiceStub(wallet_channel)
        for customer_id in ids[:passes]:
            await wallet.IssuePass(
                wallet_pb2.IssuePassRequest(
                    customer_id=customer_id,
                    kind=wallet_pb2.PASS_KIND_STORE_CARD,
                    platform=wallet_pb2.WALLET_PLATFORM_APPLE,
                )
            )
        deadline = time.monotonic() + 120
        while True:
            segment = await segmentation.GetSegment(
                segmentation_pb2.GetSegmentRequest(id=SEGMENT_ID)
            )
            if segment.status == segmentation_pb2.SEGMENT_STATUS_LIVE:
                return int(segment.size)
            if time.monotonic() > deadline:
                raise TimeoutError("the bench segment was not live in 120 s")
            await asyncio.sleep(0.5)
    finally:
        await channel.close()
        await wallet_channel.close()


# --- The queries, from the schema the gateway serves ------------------------------------------

INTROSPECT = """
query Shape { __schema { types { name kind fields {
  name args { name type { kind name ofType { kind name ofType { kind name } } } }
  type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
"""
# Sizes asked of list arguments: the full view's timeline page, recommendations and pages.
SIZES = {"first": TIMELINE_FIRST, "n": RECOMMENDATIONS_N}


def _named(type_ref: Mapping[str, Any]) -> Mapping[str, Any]:
    while type_ref.get("ofType"):
        type_ref = type_ref["ofType"]
    return type_ref


def _required(arg: Mapping[str, Any]) -> bool:
    return bool(arg["type"]["kind"] == "NON_NULL")


@dataclass
class Shape:
    """The parts of the schema the queries are built from."""

    types: dict[str, Mapping[str, Any]]

    def fields(self, type_name: str) -> list[Mapping[str, Any]]:
        return list(self.types.get(type_name, {}).get("fields") or [])

    def selection(self, type_name: str, seen: frozenset[str], depth: int) -> str:
        """Every field of ``type_name`` (objects expanded, ``Customer`` not re-entered)."""
        parts = []
        for found in self.fields(type_name):
            args = [a for a in found["args"] if a["name"] in SIZES]
            if any(_required(a) and a["name"] not in SIZES for a in found["args"]):
                continue
            named = _named(found["type"])
            text = found["name"]
            if args:
                text += "(" + ", ".join(f"{a['name']}: {SIZES[a['name']]}" for a in args) + ")"
            if named["kind"] in ("OBJECT", "INTERFACE"):
                if named["name"] in seen or depth == 0:
                    continue
                inner = self.selection(named["name"], seen | {named["name"]}, depth - 1)
                if not inner:
                    continue
                text += " { " + inner + " }"
            elif named["kind"] == "UNION":
                text += " { __typename }"
            parts.append(text)
        return " ".join(parts)

    def root_args(self, field_name: str) -> set[str]:
        query = next(
            (f for f in self.fields("Query") if f["name"] == field_name),
            None,
        )
        return set() if query is None else {a["name"] for a in query["args"]}


@dataclass
class Queries:
    """The two GraphQL operations of the benchmark (the audience one only when served)."""

    one: str
    audience: str | None
    full_view: str = field(repr=False)


def build_queries(shape: Shape) -> Queries:
    """The full 360-degree view as the schema has it: ``customer(by: {id:})`` once the
    lookup is ``@oneOf`` (``customer(id:)`` before), ``customers(segment:, first:)`` when
    present."""
    full_view = "fragment FullView on Customer { " + shape.selection(
        "Customer", frozenset({"Customer"}), 4
    )
    full_view += " }"
    lookup = "by: {id: $id}" if "by" in shape.root_args("customer") else "id: $id"
    one = f"query One($id: ID!) {{ customer({lookup}) {{ ...FullView }} }} {full_view}"
    audience = None
    if {"segment", "first"} <= shape.root_args("customers"):
        connection = next(f for f in shape.fields("Query") if f["name"] == "customers")
        has_total = any(
            f["name"] == "totalCount" for f in shape.fields(_named(connection["type"])["name"])
        )
        audience = (
            "query Audience($segment: ID!) { customers(segment: $segment, "
            f"first: {AUDIENCE_FIRST}) {{ {'totalCount ' if has_total else ''}"
            "edges { cursor node { ...FullView } } pageInfo { hasNextPage endCursor } } } "
            + full_view
        )
    return Queries(one=one, audience=audience, full_view=full_view)


async def introspect(stack: Stack, client: httpx.AsyncClient) -> Shape:
    """The schema's types, asked of the running gateway."""
    response = await client.post(
        f"{stack.gateway_url}/graphql",
        json={"query": INTROSPECT},
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )
    response.raise_for_status()
    types = response.json()["data"]["__schema"]["types"]
    return Shape({t["name"]: t for t in types})


# --- The bare handler (the floor) ------------------------------------------------------------


def bare_app() -> Any:
    """A Starlette app with the gateway's service clients, making the calls the gateway makes
    for the full view and returning their replies as JSON."""
    import grpc
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gateway.clients import ServiceClients
    from gateway.schema import ORDER_EVENTS
    from gateway.settings import GatewaySettings
    from services.platform.settings import load_settings

    clients = ServiceClients(load_settings(GatewaySettings))

    def as_json(reply: Message) -> dict[str, Any]:
        return MessageToDict(reply, preserving_proto_field_name=True)

    async def identities_and_profiles(ids: list[str]) -> list[Message]:
        """The customer's identities and profile (the lookup, or each node's first fields)."""
        return list(
            await asyncio.gather(
                clients.identity.BatchGetIdentities(
                    identity_pb2.BatchGetIdentitiesRequest(customer_ids=ids)
                ),
                clients.profile.BatchGetProfiles(
                    profile_pb2.BatchGetProfilesRequest(customer_ids=ids)
                ),
            )
        )

    async def fields(ids: list[str]) -> list[Message]:
        """The calls of the view's other fields, one per loader, as ``gateway/loaders.py``
        makes them: the timeline and the order history of every customer in one
        BatchListTimeline (in the order the resolvers ask), a page of groups, memberships,
        scores, recommendations, passes."""
        pages = [
            profile_pb2.ListTimelineRequest(
                customer_id=i, page_size=TIMELINE_FIRST, page_token="", names=names
            )
            for i in ids
            for names in ((), ORDER_EVENTS)
        ]
        return list(
            await asyncio.gather(
                clients.profile.BatchListTimeline(
                    profile_pb2.BatchListTimelineRequest(requests=pages)
                ),
                clients.profile.BatchListCustomerGroups(
                    profile_pb2.BatchListCustomerGroupsRequest(
                        customer_ids=ids, page_size=GROUPS_FIRST, page_token=""
                    )
                ),
                clients.segmentation.MembershipsFor(
                    segmentation_pb2.MembershipsForRequest(customer_ids=ids)
                ),
                clients.segmentation.GetScores(segmentation_pb2.GetScoresRequest(customer_ids=ids)),
                clients.recommendation.BatchRecommend(
                    recommendation_pb2.BatchRecommendRequest(
                        requests=[
                            recommendation_pb2.RecommendRequest(
                                customer_id=i, n=RECOMMENDATIONS_N, exclude_purchased=True
                            )
                            for i in ids
                        ]
                    )
                ),
                clients.wallet.ListPasses(wallet_pb2.ListPassesRequest(customer_ids=ids)),
            )
        )

    def as_body(replies: list[Message]) -> dict[str, Any]:
        names = (
            "identities",
            "profiles",
            "timelines",
            "groups",
            "memberships",
            "scores",
            "recommendations",
            "passes",
        )
        return {name: as_json(reply) for name, reply in zip(names, replies, strict=True)}

    async def one(request: Request) -> JSONResponse:
        # The gateway looks the customer up first (identities and profile), then resolves
        # its fields: the two rounds of calls it makes.
        body = await request.json()
        ids = [str(body["id"])]
        try:
            found = await identities_and_profiles(ids)
            return JSONResponse(as_body(found + await fields(ids)))
        except grpc.aio.AioRpcError as error:
            return unavailable(error)

    async def audience(request: Request) -> JSONResponse:
        # The page of members, then every field of every node in one round of batch calls.
        body = await request.json()
        try:
            members = await clients.segmentation.Members(
                segmentation_pb2.MembersRequest(
                    segment_id=str(body["segment"]), page_size=AUDIENCE_FIRST, page_token=""
                )
            )
            ids = [m.customer_id for m in members.members]
            found, rest = await asyncio.gather(identities_and_profiles(ids), fields(ids))
        except grpc.aio.AioRpcError as error:
            return unavailable(error)
        return JSONResponse({"members": as_json(members), **as_body(found + rest)})

    def unavailable(error: grpc.aio.AioRpcError) -> JSONResponse:
        # A service too slow (deadline) or down: an error with its code, as the gateway has.
        return JSONResponse({"error": error.code().name}, status_code=503)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def lifespan(_: Starlette) -> Any:
        await clients.open()
        try:
            yield
        finally:
            await clients.close()

    from contextlib import asynccontextmanager

    return Starlette(
        routes=[
            Route("/one", one, methods=["POST"]),
            Route("/audience", audience, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=asynccontextmanager(lifespan),
    )


def serve_profiled_gateway(path: str) -> None:
    """``python -m gateway`` with cProfile counting CPU time (not time waiting for I/O) from
    SIGUSR1 (sent once warmed up, so start-up and warm-up stay out) until SIGTERM, when the
    stats are dumped at ``path`` (uvicorn raises SIGTERM again once shut down, which would
    end a process run under ``-m cProfile`` before it wrote anything)."""
    import cProfile
    import runpy

    profiler = cProfile.Profile(time.process_time)

    def start(_signum: int, _frame: object) -> None:
        profiler.enable()

    def dump(_signum: int, _frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(path)
        os._exit(0)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGTERM, dump)
    # The gateway's command line takes no argument but ``keys``: it must not see ours.
    sys.argv = [sys.argv[0]]
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)


def serve_bare(port: int) -> None:
    """Run the bare handler on uvicorn as the gateway runs (no access log)."""
    import uvicorn

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_config=None, access_log=False)


# --- Load ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# One request: None when it succeeded, else what failed (a status, error codes, an exception).
Sender = Callable[[httpx.AsyncClient], Awaitable[str | None]]


async def hammer(
    request: Sender,
    clients: int,
    seconds: float,
    pid: int,
    warmed_up: Callable[[], None] = lambda: None,
    others: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``clients`` concurrent clients sending ``request`` back to back: a short warm-up
    (connections opened, documents parsed and cached; then ``warmed_up`` is called), then
    ``seconds`` measured. The clients never pause between the two (an idle keep-alive
    connection would be closed by the server under a client about to reuse it), and the
    window counts the requests that complete in it: requests/s those that succeeded, the
    latencies those of every one, errors by kind."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    # Requests started once the window opened, the tail after it closed included: what a
    # profiler started with the window and stopped after the run saw whole.
    started_in_window = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    opens = time.perf_counter() + min(2.0, seconds / 5)
    closes = opens + seconds
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def client() -> None:
            nonlocal started_in_window
            while time.perf_counter() < closes:
                started = time.perf_counter()
                try:
                    failed = await request(http)
                except httpx.HTTPError as error:
                    # A connection the server closed, a timeout: an error, and the run goes on.
                    failed = type(error).__name__
                ended = time.perf_counter()
                started_in_window += started >= opens
                if not opens <= ended < closes:
                    continue
                latencies.append(ended - started)
                if failed is not None:
                    errors[failed] += 1

        stack_ticks: dict[str, int] = {}

        async def window() -> int:
            """The server's CPU ticks over the window (and each other process's)."""
            await asyncio.sleep(opens - time.perf_counter())
            warmed_up()
            before = cpu_ticks(pid)
            before_others = {name: cpu_ticks(p) for name, p in (others or {}).items()}
            await asyncio.sleep(closes - time.perf_counter())
            stack_ticks.update(
                {name: cpu_ticks(p) - before_others[name] for name, p in (others or {}).items()}
            )
            return cpu_ticks(pid) - before

        ticks, _ = await asyncio.gather(
            window(), asyncio.gather(*(client() for _ in range(clients)))
        )
    cpu = ticks / CLOCK_TICKS
    done = len(latencies)
    failed = errors.total()
    return {
        "requests": done,
        "requests_per_s": round((done - failed) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "errors": failed,
        **({"error_kinds": dict(errors.most_common(5))} if failed else {}),
        "server_cpu_ms_per_request": round(cpu * 1000 / max(done, 1), 2),
        # What holds the floor: every other process's CPU per request over the same window.
        **(
            {
                "stack_cpu_ms_per_request": {
                    name: round(t / CLOCK_TICKS * 1000 / max(done, 1), 2)
                    for name, t in sorted(stack_ticks.items())
                }
            }
            if stack_ticks
            else {}
        ),
        "clients": clients,
        "seconds": seconds,
        "requests_started_in_window": started_in_window,
    }


def graphql_request(
    url: str, api_key: str, query: str, variables: Callable[[], dict[str, Any]], root: str
) -> Sender:
    """A GraphQL POST that succeeded when it has data and no errors (else the status, or the
    errors' codes and the first one's path)."""
    headers = {"Authorization": f"Bearer {api_key}"}

    async def send(http: httpx.AsyncClient) -> str | None:
        response = await http.post(
            url, json={"query": query, "variables": variables()}, headers=headers
        )
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        body = response.json()
        if "errors" in body:
            codes = sorted({str(e.get("extensions", {}).get("code")) for e in body["errors"]})
            return f"{','.join(codes)} at {body['errors'][0].get('path')}"
        if (body.get("data") or {}).get(root) is None:
            return f"{root} is null"
        return None

    return send


def bare_request(url: str, body: Callable[[], dict[str, Any]]) -> Sender:
    """A POST to the bare handler that succeeded when it answered 200 (else the status and
    the gRPC code it tells)."""

    async def send(http: httpx.AsyncClient) -> str | None:
        response = await http.post(url, json=body())
        if response.status_code != 200:
            return f"HTTP {response.status_code} {response.text[:40]}"
        response.json()
        return None

    return send


# --- The run ------------------------------------------------------------------------------


def start_bare(stack: Stack, logs: Path) -> tuple[ManagedProcess, str]:
    """The bare handler as its own process with the gateway's settings; its base URL."""
    port = free_port()
    process = ManagedProcess(
        "bare",
        [sys.executable, str(HERE), "--serve-bare", str(port)],
        logs / "bare.log",
        stack.env_for("gateway"),
        cwd=ROOT,
    )
    process.start()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not process.alive:
            raise RuntimeError(f"the bare handler exited:\n{process.log_tail()}")
        return http_ok(f"{url}/healthz")

    wait_until(healthy, 60, "bare handler", 0.2)
    return process, url


async def compare(
    name: str,
    gateway: Sender,
    bare: Sender,
    pids: tuple[int, int],
    args: argparse.Namespace,
    clients: int,
    p95_target: float | None,
    others: Mapping[str, int] | None = None,
) -> None:
    """Both sides of one comparison at ``clients`` concurrent clients, gateway first, in
    ``--rounds`` alternating rounds; then the ratio and the latency the gateway adds over
    the floor (best round of each side)."""
    results: dict[str, list[dict[str, Any]]] = {"gateway": [], "bare": []}
    for _ in range(args.rounds):
        for side, request, pid in (("gateway", gateway, pids[0]), ("bare", bare, pids[1])):
            measured = await hammer(request, clients, args.seconds, pid, others=others)
            results[side].append(measured)
            emit({"metric": f"{name}_{side}", **measured})
    best_gateway = max(r["requests_per_s"] for r in results["gateway"])
    best_bare = max(r["requests_per_s"] for r in results["bare"])
    ratio = best_gateway / best_bare if best_bare else 0.0
    latency: dict[str, object] = {}
    for q in ("p50_ms", "p95_ms"):
        gateway_ms = min(r[q] for r in results["gateway"])
        bare_ms = min(r[q] for r in results["bare"])
        latency |= {
            f"gateway_{q}": gateway_ms,
            f"bare_{q}": bare_ms,
            f"gateway_added_{q}": round(gateway_ms - bare_ms, 1),
        }
    record: dict[str, object] = {
        "metric": f"{name}_gateway_vs_bare",
        "clients": clients,
        "gateway_requests_per_s": best_gateway,
        "bare_requests_per_s": best_bare,
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_ratio": ratio >= TARGET_RATIO,
        "gateway_cpu_ms_per_request": min(
            r["server_cpu_ms_per_request"] for r in results["gateway"]
        ),
        "bare_cpu_ms_per_request": min(r["server_cpu_ms_per_request"] for r in results["bare"]),
        **latency,
    }
    if p95_target is not None:
        p95 = min(r["p95_ms"] for r in results["gateway"])
        record |= {"target_p95_ms": p95_target, "meets_p95": p95 <= p95_target}
    emit(record)


# Where the gateway's CPU goes, by where the function is defined (first match wins).
CATEGORIES = (
    ("resolvers (gateway/*)", ("/gateway/",)),
    ("extensions (strawberry/extensions)", ("strawberry/extensions",)),
    ("schema execution and result conversion (graphql-core)", ("graphql/execution",)),
    ("parse and validation (graphql-core)", ("graphql/language", "graphql/validation")),
    ("graphql-core types and other", ("graphql/",)),
    ("strawberry (fields, types, http)", ("strawberry/",)),
    ("gRPC client", ("grpc/", "grpc_")),
    ("protobuf (MessageToDict, messages)", ("google/protobuf",)),
    ("JSON", ("json/",)),
    ("HTTP server (uvicorn, starlette, h11)", ("uvicorn/", "starlette/", "h11/", "httptools")),
    ("pydantic", ("pydantic",)),
    ("asyncio event loop", ("asyncio/", "selectors", "uvloop")),
    ("logging", ("logging/",)),
)


def _category(filename: str) -> str:
    if filename == "~":
        return "builtins called by builtins"
    return next(
        (label for label, marks in CATEGORIES if any(m in filename for m in marks)), "other"
    )


def profile_breakdown(path: Path, requests: int) -> None:
    """Own CPU time per category and the top functions of a cProfile dump."""
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_category: dict[str, float] = {}
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, own, _cum, callers) in raw.items():
        total += own
        if filename != "~":
            category = _category(filename)
            by_category[category] = by_category.get(category, 0.0) + own
            continue
        # A builtin (C) function's time goes to whoever called it, by what each caller spent.
        for (caller_file, _l, _n), timing in callers.items():
            category = _category(caller_file)
            by_category[category] = by_category.get(category, 0.0) + timing[2]
    emit(
        {
            "metric": "gateway_profile_own_time_share",
            "profiled_requests": requests,
            "profiled_cpu_ms_per_request": round(total * 1000 / max(requests, 1), 2),
            "shares": {
                k: round(v / total, 3)
                for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
            },
        }
    )
    top = sorted(raw.items(), key=lambda kv: -kv[1][3])
    cumulative = [
        {
            "function": f"{Path(f).name}:{line}:{name}",
            "cum_ms_per_request": round(cum * 1000 / max(requests, 1), 3),
        }
        for (f, line, name), (_cc, _nc, _own, cum, _callers) in top[:40]
    ]
    emit({"metric": "gateway_profile_top_cumulative", "functions": cumulative})
    own_top = sorted(raw.items(), key=lambda kv: -kv[1][2])
    emit(
        {
            "metric": "gateway_profile_top_own",
            "functions": [
                {
                    "function": f"{Path(f).name}:{line}:{name}",
                    "own_ms_per_request": round(own * 1000 / max(requests, 1), 3),
                    "calls_per_request": round(nc / max(requests, 1), 1),
                }
                for (f, line, name), (_cc, nc, own, _cum, _callers) in own_top[:30]
            ],
        }
    )
    # The gateway's own functions (its modules, by path): a coroutine's cumulative time is
    # that of its resumptions, and resolvers run in tasks of their own, not under the view.
    gateway_code = str(ROOT / "gateway") + os.sep
    ours = sorted(
        ((k, v) for k, v in raw.items() if k[0].startswith(gateway_code)),
        key=lambda kv: -kv[1][3],
    )
    emit(
        {
            "metric": "gateway_profile_gateway_code_cumulative",
            "functions": [
                {
                    "function": f"{Path(f).relative_to(ROOT)}:{line}:{name}",
                    "cum_ms_per_request": round(cum * 1000 / max(requests, 1), 3),
                    "own_ms_per_request": round(own * 1000 / max(requests, 1), 3),
                    "calls_per_request": round(nc / max(requests, 1), 1),
                }
                for (f, line, name), (_cc, nc, own, cum, _callers) in ours[:25]
            ],
        }
    )


async def profile_gateway(
    stack: Stack, logs: Path, path: Path, request: Sender, args: argparse.Namespace
) -> None:
    """Phase a (at the last ``--clients`` count) against a gateway under cProfile, then its
    breakdown."""
    stack.processes["gateway"].stop()
    process = ManagedProcess(
        "gateway-profiled",
        [sys.executable, str(HERE), "--profiled-gateway", str(path)],
        logs / "gateway-profiled.log",
        stack.env_for("gateway"),
        cwd=ROOT,
    )
    process.start()
    stack.processes["gateway"] = process
    stack.wait_healthy("gateway")
    measured = await hammer(
        request,
        args.clients[-1],
        args.seconds,
        pid_of(process),
        lambda: process.signal(signal.SIGUSR1),
    )
    emit({"metric": "one_customer_gateway_profiled", **measured})
    process.signal(signal.SIGTERM)
    assert process.process is not None
    process.process.wait(60)
    # The requests in flight when profiling began add part of their CPU too: a slight
    # overestimate per request, smaller the longer the window.
    profile_breakdown(path, measured["requests_started_in_window"])


async def run(args: argparse.Namespace, stack: Stack, logs: Path) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        await load_customers(stack, client, args.customers)
        ids = await customer_ids(stack, args.customers)
        size = await segment_and_passes(stack, ids, args.passes)
        emit(
            {
                "metric": "gateway_bench_data",
                "customers": len(ids),
                "segment_size": size,
                "passes": args.passes,
                "load_seconds": round(time.perf_counter() - started, 1),
            }
        )
        queries = build_queries(await introspect(stack, client))
    bare, bare_url = start_bare(stack, logs)
    try:
        gateway_pid = pid_of(stack.processes["gateway"])
        graphql_url = f"{stack.gateway_url}/graphql"

        def some_id() -> dict[str, Any]:
            return {"id": random.choice(ids)}

        one = graphql_request(graphql_url, stack.api_key, queries.one, some_id, "customer")
        await check(one)
        # The audience query and its floor, when the schema serves it.
        audience: tuple[Sender, Sender] | None = None
        if queries.audience is None:
            emit({"metric": "audience", "skipped": "the schema has no customers(segment:, first:)"})
        else:

            def segment() -> dict[str, Any]:
                return {"segment": SEGMENT_ID}

            audience_query = graphql_request(
                graphql_url, stack.api_key, queries.audience, segment, "customers"
            )
            await check(audience_query)
            audience = (audience_query, bare_request(f"{bare_url}/audience", segment))
        pids = (gateway_pid, pid_of(bare))
        # The gateway is measured on its own.
        others = {name: pid for name, pid in stack_pids(stack).items() if name != "gateway"}
        one_bare = bare_request(f"{bare_url}/one", some_id)
        for clients in args.clients:
            await compare("one_customer", one, one_bare, pids, args, clients, TARGET_P95_MS, others)
        if audience is not None:
            for clients in args.audience_clients:
                name = f"audience_{AUDIENCE_FIRST}"
                await compare(name, *audience, pids, args, clients, None, others)
    finally:
        bare.stop()
    if args.profile:
        await profile_gateway(stack, logs, Path(args.profile), one, args)


async def check(request: Sender) -> None:
    """One request answered in full before measuring (a broken query would measure errors):
    else the run stops with what failed."""
    async with httpx.AsyncClient(timeout=60) as http:
        failed = await request(http)
    if failed is not None:
        raise SystemExit(f"the benchmark query fails: {failed}")


def client_counts(text: str) -> list[int]:
    """``--clients``: one count or a comma-separated list of them (e.g. 10,50)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text[:40]!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("--clients needs counts of at least 1")
    return counts


def main() -> None:
    """Start a private stack on free ports, load it, measure both sides, stop it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--clients",
        type=client_counts,
        default=[50],
        help="concurrent clients; a comma-separated list measures each count in turn",
    )
    # 50 pages of 50 customers at once (2,500 customers' calls in flight) outlast the 5 s
    # gRPC deadline of both sides on 2 cores: measured errors, not throughput.
    parser.add_argument(
        "--audience-clients",
        type=client_counts,
        default=[5],
        help="concurrent clients of the customers(segment:, first: 50) phases (a list too)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", default="", help="also profile the gateway; pstats here")
    parser.add_argument("--serve-bare", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profiled-gateway", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profiled_gateway:
        serve_profiled_gateway(args.profiled_gateway)
        return
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-") as scratch:
        logs = Path(scratch)
        unlimited = {
            **UNLIMITED_INGEST,
            # The per-key GraphQL rate limit would measure the limiter, not the gateway.
            "LODESTAR_GRAPHQL_RATE_LIMIT_PER_S": "1000000",
            "LODESTAR_GRAPHQL_RATE_LIMIT_BURST": "1000000",
            "LODESTAR_LOG_LEVEL": "WARNING",
        }
        stack = Stack(StackPorts.free(), logs, extra_env=unlimited)
        stack.start()
        try:
            asyncio.run(run(args, stack, logs))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
