"""Offers bound to segments: what a marketer defines, checked before it is stored."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from services.platform.errors import InvalidArgument
from services.wallet.passes import MAX_TEXT
from services.wallet.records import OfferEvent, StoredOffer

_OFFER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_URL = 500


def checked_offer(
    offer_id: str,
    segment_id: str,
    title: str,
    *,
    details: str = "",
    survey_url: str = "",
    event: Mapping[str, object] | None = None,
) -> StoredOffer:
    """The offer document; InvalidArgument names the bad field (``event`` is the request's,
    checked here)."""
    if not _OFFER_ID.match(offer_id):
        raise InvalidArgument("offer_id must be 1 to 64 letters, digits, '.', '_' or '-'")
    if not segment_id or len(segment_id) > 128:
        raise InvalidArgument("segment_id must be 1 to 128 characters")
    if not title or len(title) > MAX_TEXT:
        raise InvalidArgument(f"title must be 1 to {MAX_TEXT} characters")
    if len(details) > MAX_TEXT * 5:
        raise InvalidArgument(f"details must be at most {MAX_TEXT * 5} characters")
    if survey_url and (len(survey_url) > MAX_URL or not survey_url.startswith("https://")):
        raise InvalidArgument(f"survey_url must be an https:// URL of at most {MAX_URL} characters")
    doc: StoredOffer = {
        "_id": offer_id,
        "segment_id": segment_id,
        "title": title,
        "details": details,
        "survey_url": survey_url,
    }
    if event is not None:
        doc["event"] = _checked_event(event)
    return doc


def _checked_event(event: Mapping[str, object]) -> OfferEvent:
    name = event.get("name", "")
    if not isinstance(name, str) or not name or len(name) > MAX_TEXT:
        raise InvalidArgument(f"event.name must be 1 to {MAX_TEXT} characters")
    venue = event.get("venue", "")
    if not isinstance(venue, str) or len(venue) > MAX_TEXT:
        raise InvalidArgument(f"event.venue must be at most {MAX_TEXT} characters")
    latitude, longitude = event.get("latitude"), event.get("longitude")
    if (
        not isinstance(latitude, int | float)
        or not isinstance(longitude, int | float)
        or not -90 <= latitude <= 90
        or not -180 <= longitude <= 180
    ):
        raise InvalidArgument("event.latitude/longitude is not a place on Earth")
    starts_at = event.get("starts_at")
    if not isinstance(starts_at, datetime):
        raise InvalidArgument("event.starts_at is required")
    return {
        "name": name,
        "venue": venue,
        "latitude": latitude,
        "longitude": longitude,
        "starts_at": starts_at,
    }
