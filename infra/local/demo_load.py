"""The MovieLens demo through the front door: the films through the recommendation service's
ImportCatalog, every customer and event through the ingest API (``/v1/batch`` with the write
key), then a wait until the profiles hold every event, then the demo around it (a trained
model, example segments, scores, passes) and a tour to paste from.

Progress is a bar on a terminal and a line per tenth otherwise. A load that cannot finish
raises :class:`DemoLoadError` saying what failed or what was still behind.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TextIO

import grpc
import httpx

from infra.local.demo import ABANDONED_CHECKOUT
from infra.local.movielens import (
    DemoSource,
    Expected,
    anchor_shift,
    catalog_items,
    event_calls,
    expected_counts,
    identify_calls,
)
from lodestar.v1 import (
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from services.platform.rpcauth import blocking_channel

BATCH_CALLS = 500
LOOKUP_BATCH = 1_000
# Profiles per BatchGetProfiles while waiting: small, so each answers quickly under load.
PROFILE_BATCH = 100
# A service answering this while it folds the load is busy, not broken: ask again.
_BUSY = frozenset(
    (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
)
# Retries of one batch the gateway pushed back (429/503) or could not take (connection).
MAX_ATTEMPTS = 20
# Customers that get a loyalty card in the demo.
PASS_HOLDERS = 3
# Between two looks at the profiles (each look costs the profile service reads).
POLL_S = 2.0

CHAMPIONS = {"field": "scores.rfm_cell", "op": "eq", "value": "Champions"}
AT_RISK = {"field": "scores.rfm_cell", "op": "in", "value": ["At risk", "Can't lose"]}
SCI_FI_FANS = {
    "event": "Product Rated",
    "where": [
        {"field": "genres", "op": "contains", "value": "Sci-Fi"},
        {"field": "rating", "op": "gte", "value": 4},
    ],
    "count": {"gte": 3},
    "within_last_days": 90,
}
MOVIE_SEGMENTS = (
    ("champions", "Champions", "Bought recently, often and for much (RFM)", CHAMPIONS),
    ("at-risk", "At risk", "Good customers who have not bought for a while (RFM)", AT_RISK),
    # The same segment as the small demo's (whichever creates it first, the other keeps it).
    (
        "abandoned-checkout",
        "Abandoned checkout",
        "Started a checkout, no order within 2 days",
        ABANDONED_CHECKOUT,
    ),
    (
        "sci-fi-fans",
        "Sci-fi fans",
        "Rated three or more science-fiction films 4 or 5 in the last 90 days",
        SCI_FI_FANS,
    ),
)


class DemoLoadError(RuntimeError):
    """The load could not finish (the message says what failed or what was behind)."""


class Stopped(DemoLoadError):
    """The caller asked the load to stop."""


@dataclass(frozen=True)
class DemoTarget:
    """Where a running stack takes the demo: its doors, keys and the anchor day."""

    gateway_url: str
    write_key: str
    api_key: str
    grpc_token: str
    grpc_targets: Mapping[str, str]
    passkit_url: str
    anchor: date
    log_dir: str = ""

    def channel(self, service: str) -> grpc.Channel:
        """A blocking channel to ``service`` carrying the service token."""
        return blocking_channel(self.grpc_targets[service], self.grpc_token or None)


class Progress:
    """A progress bar on a terminal; a line per tenth of the work otherwise."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._tenth = -1

    def advance(self, count: int) -> None:
        """``count`` more units done."""
        self.done = min(self.total, self.done + count)
        rate = self.done / max(1e-6, time.monotonic() - self.started)
        if self.tty:
            filled = 30 * self.done // self.total
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                f"{self.done:,}/{self.total:,} ({rate:,.0f}/s)"
            )
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()
            return
        tenth = 10 * self.done // self.total
        if tenth != self._tenth:
            self._tenth = tenth
            print(
                f"{self.label}: {self.done:,}/{self.total:,} ({rate:,.0f}/s)",
                file=self.stream,
                flush=True,
            )


@dataclass
class LoadResult:
    """What one load sent and how long it took until the profiles caught up."""

    events: int
    customers: dict[str, str]
    catalog_items: int
    send_s: float
    total_s: float

    @property
    def events_per_s(self) -> float:
        """Events through the ingest API per second, until the profiles caught up."""
        return self.events / max(1e-6, self.total_s)


@dataclass
class FinishResult:
    """What the demo created around the data."""

    model_version: int
    segments_created: int
    customers_scored: int
    passes: list[tuple[str, str]] = field(default_factory=list)
    download_url: str = ""


def import_catalog(target: DemoTarget, items: Sequence[Mapping[str, Any]]) -> int:
    """Every film as a catalog item through the recommendation service's ImportCatalog."""
    with target.channel("recommendation") as channel:
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        response = stub.ImportCatalog(
            recommendation_pb2.ImportCatalogRequest(
                items=[recommendation_pb2.CatalogItem(**item) for item in items]
            ),
            timeout=60,
        )
    return int(response.imported)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(10.0, max(0.1, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def send_calls(
    target: DemoTarget,
    calls: Sequence[Mapping[str, Any]],
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """POST ``calls`` to ``/v1/batch`` in order, :data:`BATCH_CALLS` at a time; a batch the
    gateway pushes back is sent again (same message ids: nothing doubles)."""
    with httpx.Client(base_url=target.gateway_url, timeout=60) as client:
        for start in range(0, len(calls), BATCH_CALLS):
            if should_stop():
                raise Stopped("stopped")
            batch = list(calls[start : start + BATCH_CALLS])
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    response = client.post(
                        "/v1/batch", json={"batch": batch}, auth=(target.write_key, "")
                    )
                except httpx.TransportError as error:
                    if attempt == MAX_ATTEMPTS:
                        raise DemoLoadError(f"gateway unreachable: {error}") from None
                    time.sleep(min(0.1 * 2**attempt, 2.0))  # backoff: the gateway restarting
                    continue
                if response.status_code in (429, 503) and attempt < MAX_ATTEMPTS:
                    time.sleep(_retry_after(response))
                    continue
                if response.status_code >= 400:
                    raise DemoLoadError(
                        f"gateway refused the batch at call {start}: HTTP "
                        f"{response.status_code} {response.text[:300]}"
                    )
                break
            if progress is not None:
                progress.advance(len(batch))
    return len(calls)


def customer_ids(target: DemoTarget, user_ids: Sequence[str]) -> dict[str, str]:
    """The customer id of each ``userId`` identity already knows."""
    found: dict[str, str] = {}
    with target.channel("identity") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        for start in range(0, len(user_ids), LOOKUP_BATCH):
            chunk = user_ids[start : start + LOOKUP_BATCH]
            response = stub.BatchLookup(
                identity_pb2.BatchLookupRequest(
                    identifiers=[common_pb2.Identifier(type="user_id", value=u) for u in chunk]
                ),
                timeout=30,
            )
            for result in response.results:
                if result.customer_id:
                    found[result.identifier.value] = result.customer_id
    return found


def _profiles(target: DemoTarget, ids: Sequence[str]) -> tuple[dict[str, Any], set[str]]:
    """The profiles of ``ids`` by id, and the ids the profile service was too busy to answer
    for (a slow answer while it folds the load is not an error: they are asked again)."""
    found: dict[str, Any] = {}
    busy: set[str] = set()
    with target.channel("profile") as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        for start in range(0, len(ids), PROFILE_BATCH):
            chunk = ids[start : start + PROFILE_BATCH]
            try:
                response = stub.BatchGetProfiles(
                    profile_pb2.BatchGetProfilesRequest(customer_ids=chunk), timeout=30
                )
            except grpc.RpcError as error:
                if error.code() not in _BUSY:
                    raise
                busy.update(chunk)
                continue
            found.update(response.profiles)
    return found, busy


def profiles_behind(
    target: DemoTarget, expected: Mapping[str, Expected], known: Mapping[str, str]
) -> dict[str, str]:
    """Each ``userId`` whose profile does not hold its expected events yet, with what it holds."""
    behind: dict[str, str] = {u: "not resolved yet" for u in expected if u not in known}
    profiles, busy = _profiles(target, [known[u] for u in expected if u in known])
    for user_id, want in expected.items():
        if user_id not in known:
            continue
        if known[user_id] in busy:
            behind[user_id] = "the profile service did not answer in time"
            continue
        profile = profiles.get(known[user_id])
        counts = dict(profile.event_counts) if profile is not None else {}
        rated, ordered = counts.get("Product Rated", 0), counts.get("Order Completed", 0)
        if profile is None or profile.traits.fields.get("age") is None:
            behind[user_id] = "no profile traits yet"
        elif rated < want.rated or ordered < want.ordered:
            behind[user_id] = (
                f"Product Rated {rated}/{want.rated}, Order Completed {ordered}/{want.ordered}"
            )
    return behind


def wait_caught_up(
    target: DemoTarget,
    expected: Mapping[str, Expected],
    timeout_s: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, str]:
    """Wait until every customer's profile holds the load's events; their customer ids.

    Customers are checked :data:`PROFILE_BATCH` at a time and the next ones only once these
    are done (every look reads profiles the service is busy folding). Raises
    :class:`DemoLoadError` naming customers still behind after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pending = dict(expected)
    known: dict[str, str] = {}
    while pending:
        if should_stop():
            raise Stopped("stopped")
        chunk = dict(list(pending.items())[:PROFILE_BATCH])
        unresolved = [u for u in chunk if u not in known]
        if unresolved:
            try:
                known.update(customer_ids(target, unresolved))
            except grpc.RpcError as error:
                if error.code() not in _BUSY:
                    raise
        behind = profiles_behind(target, chunk, known)
        for user_id in chunk:
            if user_id not in behind:
                del pending[user_id]
        if not behind:
            continue
        if time.monotonic() > deadline:
            shown = "; ".join(f"{u}: {what}" for u, what in list(behind.items())[:5])
            raise DemoLoadError(
                f"profiles not caught up after {timeout_s:.0f} s: {len(pending)} of "
                f"{len(expected)} customers not confirmed yet ({shown})"
            )
        time.sleep(POLL_S)
    return {u: known[u] for u in expected}


def load(
    source: DemoSource,
    target: DemoTarget,
    *,
    stream: TextIO | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    timeout_s: float = 3_600.0,
) -> LoadResult:
    """Send the catalog, customers and events of ``source``; return once the profiles hold
    every event."""
    started = time.monotonic()
    shift = anchor_shift(source, target.anchor)
    calls = identify_calls(source, shift) + event_calls(source, shift)
    imported = import_catalog(target, catalog_items(source))
    progress = Progress(len(calls), "sending events", stream)
    send_calls(target, calls, progress, should_stop)
    sent = time.monotonic()
    out = stream or sys.stderr
    print(
        f"sent {len(calls):,} calls in {sent - started:.0f} s; waiting for the profiles ...",
        file=out,
        flush=True,
    )
    customers = wait_caught_up(target, expected_counts(source), timeout_s, should_stop)
    return LoadResult(len(calls), customers, imported, sent - started, time.monotonic() - started)


def create_segments(target: DemoTarget) -> int:
    """The example segments (existing ones are left as they are)."""
    created = 0
    with target.channel("segmentation") as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        for segment_id, name, description, rule in MOVIE_SEGMENTS:
            try:
                stub.CreateSegment(
                    segmentation_pb2.CreateSegmentRequest(
                        id=segment_id,
                        name=name,
                        description=description,
                        rule_json=json.dumps(rule),
                    ),
                    timeout=60,
                )
                created += 1
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
    return created


# How long to keep asking while another training run holds the lease.
TRAIN_WAIT_S = 300.0


def train(target: DemoTarget) -> int:
    """Train the recommender now; the model version."""
    with target.channel("recommendation") as channel:
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        deadline = time.monotonic() + TRAIN_WAIT_S
        while time.monotonic() < deadline:
            try:
                info = stub.Train(recommendation_pb2.TrainRequest(), timeout=600)
                return int(info.version)
            except grpc.RpcError as error:
                # Another replica (or the service's own schedule) is training: ask again
                # shortly, until the bounded wait is over.
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(POLL_S)
        info = stub.GetModelInfo(recommendation_pb2.GetModelInfoRequest(), timeout=30)
        return int(info.version)


def recompute_scores(target: DemoTarget) -> int:
    """RFM, churn and CLV scores now; how many customers were scored."""
    with target.channel("segmentation") as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        response = stub.RecomputeScores(segmentation_pb2.RecomputeScoresRequest(), timeout=600)
    return int(response.customers_scored)


def issue_passes(target: DemoTarget, holders: Sequence[str]) -> list[tuple[str, str]]:
    """An Apple loyalty card for each customer of ``holders`` that has none yet;
    (customer id, serial number) of each holder's card."""
    cards: list[tuple[str, str]] = []
    with target.channel("wallet") as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        existing = stub.ListPasses(wallet_pb2.ListPassesRequest(customer_ids=holders), timeout=30)
        for holder in existing.customers:
            card = next(
                (
                    p
                    for p in holder.passes
                    if p.kind == wallet_pb2.PASS_KIND_STORE_CARD
                    and p.platform == wallet_pb2.WALLET_PLATFORM_APPLE
                ),
                None,
            )
            if card is None:
                card = stub.IssuePass(
                    wallet_pb2.IssuePassRequest(
                        customer_id=holder.customer_id,
                        kind=wallet_pb2.PASS_KIND_STORE_CARD,
                        platform=wallet_pb2.WALLET_PLATFORM_APPLE,
                    ),
                    timeout=30,
                )
            cards.append((holder.customer_id, card.serial_number))
    return cards


def download_link(target: DemoTarget, serial_number: str) -> str:
    """A time-limited download URL of one pass."""
    with target.channel("wallet") as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        link = stub.GetDownloadLink(
            wallet_pb2.GetDownloadLinkRequest(serial_number=serial_number), timeout=30
        )
    return str(link.url)


def finish(target: DemoTarget, customers: Mapping[str, str]) -> FinishResult:
    """Train, create the example segments, recompute the scores and issue a few passes."""
    version = train(target)
    created = create_segments(target)
    scored = recompute_scores(target)
    holders = [customers[u] for u in sorted(customers, key=_user_order)[:PASS_HOLDERS]]
    passes = issue_passes(target, holders) if holders else []
    url = download_link(target, passes[0][1]) if passes else ""
    return FinishResult(version, created, scored, passes, url)


def _user_order(user_id: str) -> tuple[int, str]:
    tail = user_id.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else 0, user_id)
