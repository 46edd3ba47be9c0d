"""Segments as the marketing domain sees them: a named, versioned rule, which changes it
reacts to, and who enters or leaves when it is evaluated. Pure logic, no I/O."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.platform.vocabulary import ENGAGEMENT_EVENTS
from services.segmentation.rules import EventRecord, ProfileView, Rule, load, parse

BACKFILLING = "backfilling"
LIVE = "live"
ENTERED = "entered"
EXITED = "exited"
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NAMESPACE = uuid.UUID("3f6c1a9e-8d2b-4e57-9a0c-71b4e2d8c6f5")


@dataclass(frozen=True)
class Segment:
    """A live audience definition."""

    id: str
    name: str
    version: int
    rule: Rule
    status: str = LIVE

    def matches(
        self, profile: ProfileView | None, events: Sequence[EventRecord], now: datetime
    ) -> bool:
        """Whether the customer belongs. Without a profile view yet (events can arrive
        before the profile change they cause) the view is empty: a rule on events alone can
        already hold, one on profile fields waits for the view."""
        return self.rule.matches(profile or {}, events, now)

    def reads_any(self, changed_paths: Iterable[str]) -> bool:
        """Whether a change to any of these profile paths can change this segment."""
        return any(_overlaps(p, c) for p in self.rule.paths for c in changed_paths)


def _overlaps(read: str, changed: str) -> bool:
    """``orders`` is touched by ``orders``; ``behaviour`` by ``behaviour.cart``; ``traits.plan``
    by ``traits.plan`` (and by a change of ``traits`` as a whole)."""
    return read == changed or changed.startswith(read + ".") or read.startswith(changed + ".")


def parse_rule(rule_json: str, pii_traits: frozenset[str]) -> Rule:
    """A rule from its JSON text; :class:`RuleError` naming the bad path."""
    return parse(load(rule_json), pii_traits)


def segment_id_for(name: str) -> str:
    """An id made from a name: ``"VIP customers"`` -> ``vip-customers``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
    return slug or "segment"


def check_segment_id(segment_id: str) -> None:
    """Ids are URL- and key-safe; ``ValueError`` naming the rule otherwise."""
    if not _ID.match(segment_id):
        raise ValueError(
            "id: 1-63 characters, lowercase letters, digits, '-' and '_', starting with a "
            "letter or digit"
        )


@dataclass(frozen=True)
class Transition:
    """A customer entering or leaving a segment."""

    segment_id: str
    segment_version: int
    customer_id: str
    change: str
    at: datetime
    cause: str

    @property
    def event_id(self) -> str:
        """The same transition caused by the same input always has the same id, so a
        consumer can drop a duplicate."""
        parts = (self.segment_id, self.customer_id, self.segment_version, self.change, self.cause)
        return str(uuid.uuid5(_NAMESPACE, ":".join(map(str, parts))))


def transitions(
    customer_id: str,
    evaluated: Mapping[str, tuple[bool, int]],
    current: Iterable[str],
    now: datetime,
    cause: str,
) -> list[Transition]:
    """Who enters (matches, not a member) and who exits (a member, no longer matches), for
    the segments evaluated (segment id -> (matched, version))."""
    members = set(current)
    out = []
    for segment_id, (matched, version) in sorted(evaluated.items()):
        if matched and segment_id not in members:
            out.append(Transition(segment_id, version, customer_id, ENTERED, now, cause))
        elif not matched and segment_id in members:
            out.append(Transition(segment_id, version, customer_id, EXITED, now, cause))
    return out


_ENGAGEMENT_NAMES = frozenset(n for names in ENGAGEMENT_EVENTS.values() for n in names)


def _prefixes(path: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``."""
    parts = path.split(".")
    return [".".join(parts[: n + 1]) for n in range(len(parts))]


class _Index:
    """Which segments read a path (or a path above it), read below a path, or read an
    event, so picking the segments of a change costs lookups, not a scan."""

    def __init__(self, segments: Iterable[Segment]) -> None:
        self.at: dict[str, set[str]] = {}
        self.below: dict[str, set[str]] = {}
        self.events: dict[str, set[str]] = {}
        for segment in segments:
            for path in segment.rule.paths:
                self.at.setdefault(path, set()).add(segment.id)
                for prefix in _prefixes(path)[:-1]:
                    self.below.setdefault(prefix, set()).add(segment.id)
            for name in segment.rule.event_names:
                self.events.setdefault(name, set()).add(segment.id)


class Catalog:
    """The segments a replica evaluates, indexed by what triggers them."""

    def __init__(self, segments: Iterable[Segment] = ()) -> None:
        self.segments = {s.id: s for s in segments}
        self._index: _Index | None = None

    def put(self, segment: Segment) -> None:
        """Add or replace a segment."""
        self.segments[segment.id] = segment
        self._index = None

    def discard(self, segment_id: str) -> None:
        """Stop evaluating a segment."""
        self.segments.pop(segment_id, None)
        self._index = None

    def get(self, segment_id: str) -> Segment | None:
        """The segment with this id, if evaluated."""
        return self.segments.get(segment_id)

    def names(self) -> dict[str, str]:
        """Every segment's name, by id."""
        return {s.id: s.name for s in self.segments.values()}

    @property
    def index(self) -> _Index:
        """The lookup tables, rebuilt after a change of the catalogue."""
        if self._index is None:
            self._index = _Index(self.segments.values())
        return self._index

    def _pick(self, ids: set[str]) -> list[Segment]:
        return [self.segments[i] for i in sorted(ids) if i in self.segments]

    def reading(self, changed_paths: Iterable[str]) -> list[Segment]:
        """Segments a profile change to these paths can change: those reading the paths
        (or what lies above or below them), and those with conditions on an event whose
        count changed (the event may have been evaluated before this profile view
        existed)."""
        index = self.index
        ids: set[str] = set()
        for changed in changed_paths:
            for prefix in _prefixes(changed):
                ids |= index.at.get(prefix, set())
            ids |= index.below.get(changed, set())
            # Profile changes name counters by the event's own name: event_counts.<name>.
            if changed.startswith("event_counts."):
                name = changed.split(".", 1)[1]
                ids |= index.events.get(name, set())
                # Engagement (e-mail opened, pass installed, ...) is derived from counters.
                if name in _ENGAGEMENT_NAMES:
                    ids |= index.at.get("engagement", set())
        return self._pick(ids)

    def on_events(self, names: Iterable[str]) -> list[Segment]:
        """Segments whose event conditions read any of these events."""
        index = self.index
        ids: set[str] = set()
        for name in names:
            ids |= index.events.get(name, set())
        return self._pick(ids)

    def time_dependent(self) -> list[Segment]:
        """Segments whose members can change as time passes."""
        return [s for s in self.segments.values() if s.rule.time_dependent]
