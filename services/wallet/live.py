"""Live updates: what changes in a customer's data do to their passes.

- profile changes: points, cashback and tier on loyalty cards (the tier recolours the card
  and says "Congratulations, you are now Gold"), and the ``wallet_marketing`` consent;
- segment memberships: offers bound to a segment appear on the loyalty card while the
  customer is in it (a marketing message: consent and the frequency cap decide whether it
  speaks on the lock screen; it appears either way);
- orders: "Order processed", then when the order ships "Your order arrives tomorrow between
  10:00 and 12:00" (transactional: always shown);
- a survey answer for an offer with an event turns the customer's offer pass into the
  event's ticket (relevant date and place), reminded the day before;
- messages sent over gRPC, and erasure.

Every handler is idempotent: a redelivered input changes nothing, so it pushes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol

from google.protobuf.json_format import MessageToDict

from lodestar.v1 import events_pb2
from services.platform.errors import InvalidArgument
from services.wallet.passes import MAX_TEXT, WalletPasses
from services.wallet.records import (
    CustomerRecord,
    FieldValue,
    PassLocation,
    StoredOffer,
    StoredPass,
)
from services.wallet.templates import PassKind

log = logging.getLogger(__name__)

ORDER_PROCESSED = frozenset({"Order Completed"})
ORDER_SHIPPED = frozenset({"Order Shipped"})
SURVEY_ANSWERED = "Survey Answered"
HANDLED_EVENTS = ORDER_PROCESSED | ORDER_SHIPPED | {SURVEY_ANSWERED}
# Passes that show loyalty figures, offers and order status.
CARDS = frozenset({PassKind.STORE_CARD.value, PassKind.GENERIC.value})
MAX_HEADER = 60
CONSENT_PURPOSE = "wallet_marketing"


@dataclass(frozen=True)
class LivePolicy:
    """How live updates speak: the marketing cap, when tickets are reminded, and the time
    zone that "today" and "tomorrow" are told in."""

    marketing_per_day: int = 1
    reminder_before: timedelta = timedelta(days=1)
    zone: tzinfo = UTC


def _when(moment: datetime, now: datetime, zone: tzinfo) -> str:
    """``today`` / ``tomorrow`` / ``on Tue 24 Nov`` for ``moment`` seen from ``now``."""
    days = (moment.astimezone(zone).date() - now.astimezone(zone).date()).days
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    return moment.astimezone(zone).strftime("on %a %d %b").replace(" 0", " ")


def _time(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%H:%M")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def delivery_message(properties: Mapping[str, object], now: datetime, zone: tzinfo) -> str:
    """What a shipped order says: the delivery window when the event has one."""
    start = _parse_time(properties.get("delivery_start"))
    end = _parse_time(properties.get("delivery_end"))
    if start is None:
        return "Your order has shipped"
    if end is None or end <= start:
        return f"Your order arrives {_when(start, now, zone)} at {_time(start, zone)}"
    return (
        f"Your order arrives {_when(start, now, zone)} between {_time(start, zone)} "
        f"and {_time(end, zone)}"
    )


def _loyalty(change: events_pb2.ProfileChanged) -> dict[str, FieldValue]:
    """The card fields a profile change sets: points, cashback and (when known) tier."""
    loyalty = change.loyalty
    figures: dict[str, FieldValue] = {
        "points": int(loyalty.points),
        "cashback_minor": int(loyalty.cashback_balance.amount_minor),
    }
    if loyalty.tier:
        figures["tier"] = loyalty.tier
    return figures


def _consent(change: events_pb2.ProfileChanged) -> bool | None:
    for state in change.consent:
        if state.purpose == CONSENT_PURPOSE:
            return state.state == "granted"
    return None


class LiveStore(Protocol):
    """What live updates read and write beside the passes (the wallet's store)."""

    async def passes_of(self, customer_ids: Sequence[str]) -> list[StoredPass]:
        """Every pass of these customers, oldest first."""
        ...

    async def passes_of_live(self, customer_ids: Sequence[str]) -> list[StoredPass]:
        """The passes of these customers that are not voided."""
        ...

    async def live_passes_of(self, customer_id: str) -> list[StoredPass]:
        """The customer's passes that are not voided."""
        ...

    async def due_reminders(self, now: datetime, limit: int) -> list[StoredPass]:
        """Tickets whose reminder is due."""
        ...

    async def customer(self, customer_id: str) -> CustomerRecord | None:
        """What the wallet remembers of a customer, or None."""
        ...

    async def customers_of(self, customer_ids: Sequence[str]) -> dict[str, CustomerRecord]:
        """Those of these customers the wallet knows, by id."""
        ...

    async def remember(self, customer_id: str, changes: CustomerRecord) -> None:
        """Set what the wallet knows of a customer."""
        ...

    async def remember_many(self, changes: Mapping[str, CustomerRecord]) -> None:
        """Set what the wallet knows of several customers at once."""
        ...

    async def take_marketing_slot(self, customer_id: str, now: datetime, cap: int) -> str:
        """Count one marketing message against the cap; why not (``""`` when it may)."""
        ...

    async def all_offers(self) -> list[StoredOffer]:
        """Every offer, by id."""
        ...

    async def get_offer(self, offer_id: str) -> StoredOffer | None:
        """One offer, or None."""
        ...

    async def delete_registrations_of(self, serial_numbers: Sequence[str]) -> int:
        """Remove every registration of these passes."""
        ...

    async def forget_customer(self, customer_id: str) -> None:
        """Drop what the wallet knows about the customer beyond their passes."""
        ...

    async def merge_customers(self, survivor_id: str, merged_ids: Sequence[str]) -> int:
        """Passes of merged customers now belong to the survivor."""
        ...


async def _nothing() -> dict[str, CustomerRecord]:
    return {}


def _held_after(
    held: Sequence[str],
    moves: Sequence[events_pb2.SegmentMembershipChanged],
    by_segment: Mapping[str, Sequence[StoredOffer]],
) -> list[str]:
    """The offers a customer holds after these membership changes, in the order gained."""
    after = list(held)
    for move in moves:
        for offer in by_segment[move.segment_id]:
            if move.change == events_pb2.MEMBERSHIP_CHANGE_ENTERED:
                if offer["_id"] not in after:
                    after.append(offer["_id"])
            elif offer["_id"] in after:
                after.remove(offer["_id"])
    return after


class LiveUpdates:
    """Turns profile, segment and order events into pass changes."""

    def __init__(
        self,
        passes: WalletPasses,
        store: LiveStore,
        policy: LivePolicy | None = None,
        flush: Callable[[Sequence[str]], Awaitable[object]] | None = None,
    ) -> None:
        self.passes = passes
        self.store = store
        self.policy = policy or LivePolicy()
        # Delivers the named passes' pushes now (erasure pushes the voided pass before the
        # registrations go).
        self.flush = flush

    async def _cards_by_customer(self, customer_ids: Sequence[str]) -> dict[str, list[StoredPass]]:
        found: dict[str, list[StoredPass]] = defaultdict(list)
        for doc in await self.store.passes_of_live(customer_ids):
            found[doc["customer_id"]].append(doc)
        return found

    async def profile_changes(self, changes: Sequence[events_pb2.ProfileChanged]) -> int:
        """Loyalty figures onto cards, consent into the wallet's memory; returns the number
        of passes changed. Customers without passes cost batched reads (``$in`` chunks); the
        cards that change are written in one round trip, and so are the consent values that
        changed."""
        latest: dict[str, events_pb2.ProfileChanged] = {}
        for change in changes:
            if change.customer_id:
                latest[change.customer_id] = change
        if not latest:
            return 0
        ids = list(latest)
        # What the wallet remembers is only consent: read it only when a change says some.
        with_consent = [c for c, change in latest.items() if _consent(change) is not None]
        known, passes = await asyncio.gather(
            self.store.customers_of(with_consent) if with_consent else _nothing(),
            self._cards_by_customer(ids),
        )
        # Consent is remembered, and only written when it changes; loyalty figures are not
        # (a new card asks the profile service, and the cards themselves hold them).
        remember: dict[str, CustomerRecord] = {}
        for customer_id, change in latest.items():
            consent = _consent(change)
            if (
                consent is not None
                and known.get(customer_id, {}).get("wallet_marketing") != consent
            ):
                remember[customer_id] = {"wallet_marketing": consent}
        # Every card's figures in one write, beside the wallet's memory in another.
        cards = [
            (doc, _loyalty(change))
            for customer_id, change in latest.items()
            if change.HasField("loyalty")
            for doc in passes.get(customer_id, [])
            if doc["kind"] in CARDS
        ]
        done, _ = await asyncio.gather(
            self.passes.apply_many(cards), self.store.remember_many(remember)
        )
        return sum(d is not None for d in done)

    async def memberships(self, items: Sequence[events_pb2.SegmentMembershipChanged]) -> int:
        """Offers bound to segments onto (or off) the customers' cards."""
        offers = await self.store.all_offers()
        by_segment: dict[str, list[StoredOffer]] = defaultdict(list)
        for offer in offers:
            by_segment[offer["segment_id"]].append(offer)
        titles = {o["_id"]: o["title"] for o in offers}
        moves: dict[str, list[events_pb2.SegmentMembershipChanged]] = defaultdict(list)
        for item in items:
            if item.customer_id and item.segment_id in by_segment:
                moves[item.customer_id].append(item)
        if not moves:
            return 0
        known = await self.store.customers_of(list(moves))
        passes = await self._cards_by_customer(list(moves))
        changed = 0
        for customer_id, its in moves.items():
            before = list(known.get(customer_id, {}).get("offers", []))
            held = [o for o in _held_after(before, its, by_segment) if o in titles]
            if set(held) == set(before):
                continue
            shown = [titles[o] for o in held]
            await self.store.remember(customer_id, {"offers": held, "offer_titles": shown})
            cards = [d for d in passes.get(customer_id, []) if d["kind"] in CARDS]
            if not cards:
                continue
            gained = set(held) - set(before)
            speaks = bool(gained) and not await self._marketing_held_back(customer_id)
            for doc in cards:
                done = await self.passes.apply(
                    doc, {"offers": "; ".join(shown)[:MAX_TEXT]}, announce={"offers": speaks}
                )
                changed += done is not None
        return changed

    async def _marketing_held_back(self, customer_id: str) -> str:
        why = await self.store.take_marketing_slot(
            customer_id, self.passes.clock(), self.policy.marketing_per_day
        )
        if why:
            log.info(
                "marketing message held back",
                extra={"fields": {"customer_id": customer_id, "reason": why}},
            )
        return why

    async def events(self, events: Sequence[events_pb2.Event]) -> int:
        """Orders onto cards; survey answers into tickets."""
        wanted = [
            e
            for e in events
            if e.type == events_pb2.EVENT_TYPE_TRACK and e.name in HANDLED_EVENTS and e.customer_id
        ]
        if not wanted:
            return 0
        passes = await self._cards_by_customer(list({e.customer_id for e in wanted}))
        changed = 0
        now = self.passes.clock()
        for event in wanted:
            properties = MessageToDict(event.properties)
            owned = passes.get(event.customer_id, [])
            if event.name == SURVEY_ANSWERED:
                changed += await self._ticket(owned, properties)
                continue
            if event.name in ORDER_PROCESSED:
                status = "Order processed"
            else:
                status = delivery_message(properties, now, self.policy.zone)
            for doc in owned:
                if doc["kind"] in CARDS:
                    done = await self.passes.apply(doc, {"status": status})
                    if done is not None:
                        changed += 1
                        owned[owned.index(doc)] = done
        return changed

    async def _ticket(self, owned: list[StoredPass], properties: Mapping[str, object]) -> int:
        offer_id = properties.get("offer_id")
        if not isinstance(offer_id, str) or not offer_id:
            return 0
        offer = await self.store.get_offer(offer_id)
        event = offer.get("event") if offer is not None else None
        if not event:
            return 0
        changed = 0
        starts: datetime = event["starts_at"]
        name, venue = event["name"], event.get("venue", "")
        place: PassLocation = {
            "latitude": event["latitude"],
            "longitude": event["longitude"],
            "relevant_text": f"{name} at {venue}" if venue else name,
        }
        for doc in owned:
            if doc.get("offer_id") != offer_id or doc["kind"] != PassKind.COUPON.value:
                continue
            done = await self.passes.apply(
                doc,
                {"event": name, "venue": venue, "status": f"Your ticket for {name}"},
                extra={
                    "kind": PassKind.EVENT_TICKET.value,
                    "relevant_dates": [starts],
                    "locations": [place],
                    "expires_at": starts + timedelta(days=1),
                    "reminder_due": starts - self.policy.reminder_before,
                },
            )
            changed += done is not None
        return changed

    async def reminders(self) -> int:
        """Remind ticket holders the day before the event (runs on a schedule)."""
        now = self.passes.clock()
        changed = 0
        for doc in await self.store.due_reminders(now, 500):
            dates = doc.get("relevant_dates") or []
            starts = dates[0] if dates else None
            if starts is None or starts <= now:
                await self.passes.apply(doc, {}, extra={"reminder_due": None})
                continue
            zone = self.policy.zone
            event = doc.get("fields", {}).get("event", "Your event")
            text = f"Reminder: {event} is {_when(starts, now, zone)} at {_time(starts, zone)}"
            done = await self.passes.apply(doc, {"status": text}, extra={"reminder_due": None})
            changed += done is not None
        return changed

    async def send_message(
        self, serial_number: str, customer_id: str, header: str, body: str, marketing: bool
    ) -> tuple[int, str]:
        """A lock-screen message on a pass or on every live pass of a customer; returns the
        passes that show it and, when held back, why."""
        if bool(serial_number) == bool(customer_id):
            raise InvalidArgument("give exactly one of serial_number and customer_id")
        if not body or len(body) > MAX_TEXT:
            raise InvalidArgument(f"body must be 1 to {MAX_TEXT} characters")
        if len(header) > MAX_HEADER:
            raise InvalidArgument(f"header must be at most {MAX_HEADER} characters")
        if serial_number:
            doc = await self.passes.get(serial_number)
            docs = [] if doc.get("voided") else [doc]
            customer_id = doc["customer_id"]
        else:
            docs = await self.store.live_passes_of(customer_id)
        if not docs:
            return 0, "no live pass"
        if marketing:
            why = await self._marketing_held_back(customer_id)
            if why:
                return 0, why
        shown = 0
        for doc in docs:
            await self.passes.apply(doc, {"message": body, "message_header": header})
            shown += 1
        return shown, ""

    async def erase(self, customer_id: str) -> None:
        """Void every pass of the customer and push it, then delete the registrations and
        what the wallet knows of the customer. Safe to repeat."""
        docs = await self.store.passes_of([customer_id])
        for doc in docs:
            await self.passes.apply(
                doc,
                {},
                extra={"voided": True, "fields": {}, "announce": {}, "customer_id": ""},
            )
        serials = [d["_id"] for d in docs]
        if self.flush is not None and serials:
            try:
                await self.flush(serials)
            except Exception:
                log.exception("pushing voided passes failed; erasing anyway")
        await self.store.delete_registrations_of(serials)
        await self.store.forget_customer(customer_id)

    async def merge(self, survivor_id: str, merged_ids: Sequence[str]) -> None:
        """Customers ``merged_ids`` became ``survivor_id``: their passes follow the survivor."""
        await self.store.merge_customers(survivor_id, list(merged_ids))

    async def export(self, customer_id: str) -> dict[str, Any]:
        """The customer's passes (without secrets) and what the wallet remembers."""
        docs = await self.store.passes_of([customer_id])
        remembered: CustomerRecord = await self.store.customer(customer_id) or {}
        return {
            "passes": [
                {
                    "serial_number": d["_id"],
                    "kind": d["kind"],
                    "platform": d["platform"],
                    "fields": {k: str(v) for k, v in d.get("fields", {}).items()},
                    "voided": bool(d.get("voided")),
                    "created_at": d["created_at"].isoformat(),
                }
                for d in docs
            ],
            "wallet_marketing": remembered.get("wallet_marketing"),
            "offers": list(remembered.get("offers", [])),
        }
