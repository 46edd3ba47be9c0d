"""Creating, changing and deleting segments, and the backfills they start.

A new or changed rule is stored as ``backfilling``; a background task evaluates every
profile view and flips it to ``live``. Real-time evaluation covers the segment from the
moment it is stored, so nobody who qualifies in the meantime is missed. Every replica
reloads the definitions on a short interval (``refresh``), so all of them evaluate the same
segments.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from services.platform.errors import InvalidArgument, NotFound
from services.segmentation.audience import Audiences
from services.segmentation.records import SegmentChanges, StoredSegment
from services.segmentation.rules import Rule, RuleError, json_path
from services.segmentation.segments import (
    BACKFILLING,
    LIVE,
    Segment,
    check_segment_id,
    parse_rule,
    segment_id_for,
)

log = logging.getLogger(__name__)
MAX_NAME = 200
MAX_DESCRIPTION = 2_000
MAX_RULE_BYTES = 64_000


class DefinitionStore(Protocol):
    """What the catalogue needs of the store: the stored definitions and their progress."""

    @property
    def event_retention_s(self) -> int:
        """How long recent events are kept (seconds): the longest window a rule may use."""

    async def create_segment(self, doc: StoredSegment) -> None:
        """Insert a new definition (``AlreadyExists`` if the id is taken)."""

    async def update_segment(
        self, segment_id: str, changes: SegmentChanges
    ) -> StoredSegment | None:
        """Apply ``changes``; the new definition (``None`` if unknown)."""

    async def set_progress(
        self, segment_id: str, version: int, evaluated: int, total: int, live: bool
    ) -> None:
        """Backfill progress of one version."""

    async def delete_segment(self, segment_id: str) -> bool:
        """Remove the definition; ``True`` if it existed."""

    async def get_segment(self, segment_id: str) -> StoredSegment | None:
        """One definition."""

    async def list_segments(self) -> list[StoredSegment]:
        """Every definition, by id."""

    async def count_profiles(self) -> int:
        """How many customers have a view."""


class SegmentDefinitions:
    """The segment catalogue and its backfills."""

    def __init__(
        self, store: DefinitionStore, audiences: Audiences, pii_traits: frozenset[str]
    ) -> None:
        self.store = store
        self.audiences = audiences
        self.pii_traits = pii_traits
        self.backfills: dict[str, asyncio.Task[None]] = {}
        # Changes made here, numbered, so a refresh that read the store before one of them
        # keeps it (one number per segment id ever changed by this process).
        self._changes = 0
        self._changed: dict[str, int] = {}

    def _put(self, segment: Segment) -> None:
        self._changes += 1
        self._changed[segment.id] = self._changes
        self.audiences.put(segment)

    def _discard(self, segment_id: str) -> None:
        self._changes += 1
        self._changed[segment_id] = self._changes
        self.audiences.discard(segment_id)

    def _rule(self, rule_json: str) -> tuple[Rule, str]:
        if len(rule_json.encode()) > MAX_RULE_BYTES:
            raise InvalidArgument(f"rule_json: at most {MAX_RULE_BYTES} bytes")
        try:
            rule = parse_rule(rule_json, self.pii_traits)
        except RuleError as exc:
            raise InvalidArgument(
                f"rule_json: {exc.path}: {exc.message}", path=json_path(exc.path)
            ) from None
        self._check_window(rule)
        return rule, json.dumps(rule.to_json(), sort_keys=True)

    def _check_window(self, rule: Rule) -> None:
        longest = getattr(rule, "longest_event_window_days", None)
        retention_days = self.store.event_retention_s / 86_400
        if isinstance(longest, int | float) and longest > retention_days:
            raise InvalidArgument(
                f"rule_json: an event window of {longest:g} days exceeds the event retention "
                f"({retention_days:g} days, LODESTAR_SEGMENTATION_EVENT_RETENTION_DAYS)"
            )

    async def create(
        self, segment_id: str, name: str, description: str, rule_json: str
    ) -> StoredSegment:
        """Store a new segment and start its backfill."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise InvalidArgument(f"name: required, at most {MAX_NAME} characters")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument(f"description: at most {MAX_DESCRIPTION} characters")
        segment_id = segment_id or segment_id_for(name)
        try:
            check_segment_id(segment_id)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        rule, canonical = self._rule(rule_json)
        now = datetime.now(UTC)
        doc: StoredSegment = {
            "_id": segment_id,
            "name": name,
            "description": description,
            "version": 1,
            "status": BACKFILLING,
            "rule": canonical,
            "created_at": now,
            "updated_at": now,
            "backfill_evaluated": 0,
            "backfill_total": 0,
        }
        await self.store.create_segment(doc)
        segment = Segment(segment_id, name, 1, rule, BACKFILLING)
        self._put(segment)
        self._start_backfill(segment)
        return doc

    async def update(
        self, segment_id: str, name: str, description: str, rule_json: str
    ) -> StoredSegment:
        """Change name/description; a changed rule bumps the version and backfills again."""
        current = await self.get(segment_id)
        changes: SegmentChanges = {"updated_at": datetime.now(UTC)}
        if name.strip():
            if len(name.strip()) > MAX_NAME:
                raise InvalidArgument(f"name: at most {MAX_NAME} characters")
            changes["name"] = name.strip()
        if description:
            if len(description) > MAX_DESCRIPTION:
                raise InvalidArgument(f"description: at most {MAX_DESCRIPTION} characters")
            changes["description"] = description
        rule = None
        if rule_json:
            rule, canonical = self._rule(rule_json)
            if canonical != current["rule"]:
                changes["rule"] = canonical
                changes["version"] = int(current["version"]) + 1
                changes["status"] = BACKFILLING
                changes["backfill_evaluated"] = 0
                changes["backfill_total"] = 0
        updated = await self.store.update_segment(segment_id, changes)
        if updated is None:
            raise NotFound(f"segment {segment_id!r} does not exist")
        if rule is not None and "version" in changes:
            segment = Segment(segment_id, updated["name"], updated["version"], rule, BACKFILLING)
            self._put(segment)
            self._start_backfill(segment)
        return updated

    async def delete(self, segment_id: str) -> int:
        """Remove the segment; every member exits. Returns how many did."""
        current = await self.get(segment_id)
        self._discard(segment_id)
        task = self.backfills.pop(segment_id, None)
        if task is not None:
            task.cancel()
        await self.store.delete_segment(segment_id)
        return await self.audiences.exit_all(segment_id, int(current["version"]))

    async def get(self, segment_id: str) -> StoredSegment:
        """A segment's definition; ``NotFound`` if unknown."""
        if not segment_id:
            raise InvalidArgument("id is required")
        doc = await self.store.get_segment(segment_id)
        if doc is None:
            raise NotFound(f"segment {segment_id!r} does not exist")
        return doc

    def parsed(self, doc: StoredSegment) -> Segment:
        """The live form of a stored definition."""
        rule = parse_rule(doc["rule"], self.pii_traits)
        return Segment(doc["_id"], doc["name"], int(doc["version"]), rule, doc["status"])

    async def refresh(self) -> None:
        """Reload the catalogue from the store (other replicas' changes included), and
        resume backfills a stopped process left unfinished. A segment this process changed
        while the list was being read keeps its newer form here (the list is older)."""
        began = self._changes
        docs = await self.store.list_segments()
        newer = {i for i, n in self._changed.items() if n > began}
        segments = [s for s in map(self.audiences.segment, sorted(newer)) if s is not None]
        for doc in docs:
            if doc["_id"] in newer:
                continue
            try:
                segment = self.parsed(doc)
            except RuleError:
                log.exception("stored rule no longer parses", extra={"fields": {"id": doc["_id"]}})
                continue
            segments.append(segment)
            if segment.status == BACKFILLING and segment.id not in self.backfills:
                self._start_backfill(segment)
        self.audiences.replace_all(segments)

    def _start_backfill(self, segment: Segment) -> None:
        previous = self.backfills.pop(segment.id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._backfill(segment), name=f"backfill-{segment.id}")
        self.backfills[segment.id] = task

    async def _backfill(self, segment: Segment) -> None:
        async def progress(evaluated: int, total: int) -> None:
            await self.store.set_progress(segment.id, segment.version, evaluated, total, False)

        try:
            changed = await self.audiences.reconcile(segment, progress)
            total = await self.store.count_profiles()
            await self.store.set_progress(segment.id, segment.version, total, total, True)
            live = Segment(segment.id, segment.name, segment.version, segment.rule, LIVE)
            if (self.audiences.segment(segment.id) or live).version == segment.version:
                self._put(live)
            log.info(
                "segment backfilled",
                extra={
                    "fields": {
                        "segment": segment.id,
                        "version": segment.version,
                        "changed": changed,
                    }
                },
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("backfill failed; it resumes on the next refresh")
        finally:
            if self.backfills.get(segment.id) is asyncio.current_task():
                del self.backfills[segment.id]

    async def recheck_time_windows(self) -> int:
        """Re-evaluate segments whose members change as time passes (scheduled)."""
        changed = 0
        for segment in self.audiences.time_dependent():
            if segment.status == LIVE:
                changed += await self.audiences.reconcile(segment)
        return changed

    async def recheck_reading(self, paths: Iterable[str], now: datetime) -> int:
        """Re-evaluate the live segments reading these profile paths (after this service
        rewrote them, as a scoring run does the scores)."""
        changed = 0
        for segment in self.audiences.reading(paths):
            if segment.status == LIVE:
                changed += await self.audiences.reconcile(segment, now=now)
        return changed

    def segment_names(self) -> dict[str, str]:
        """The name of every segment in the catalogue, by id."""
        return self.audiences.segment_names()
