"""The identity rules: which identifier types exist, how values are normalised, which values
never link anything, how many of each type one customer may hold, and how many customers one
event may combine. Pure logic, configured from settings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import phonenumbers

from services.platform.errors import InvalidArgument

# Highest first, like the leading CDPs: a known user id decides over an e-mail, an e-mail
# over a phone, and so on; anonymous ids are the weakest evidence.
DEFAULT_PRIORITY = (
    "user_id",
    "email",
    "phone",
    "loyalty_number",
    "device_id",
    "wallet_serial",
    "anonymous_id",
)
BUILT_IN_TYPES = DEFAULT_PRIORITY
DEFAULT_LIMITS = {
    "user_id": 1,
    "email": 5,
    "phone": 5,
    "loyalty_number": 10,
    "device_id": 10,
    "wallet_serial": 10,
    "anonymous_id": 100,
}
DEFAULT_CUSTOM_LIMIT = 10
DEFAULT_BLOCKED_PATTERNS = (
    r"^[0-]*$",  # all-zero advertising ids (tracking opted out) and empty-ish values
    r"(?i)^(null|nil|none|undefined|unknown|anonymous|n/?a|test|-1)$",
    r"(?i)^test@test\.com$",
    r"(?i)^(no-?reply|noreply)@",
)
PII_TYPES = frozenset({"email", "phone"})
MAX_VALUE_LENGTH = 512
CUSTOM_TYPE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


@dataclass(frozen=True)
class IdentityRules:
    """The configured rules. Build with :meth:`build`."""

    priority: tuple[str, ...]
    limits: Mapping[str, int]
    blocked: tuple[re.Pattern[str], ...]
    max_customers_per_event: int = 5
    default_region: str = "US"
    pii_types: frozenset[str] = field(default=PII_TYPES)

    @classmethod
    def build(
        cls,
        custom_types: Iterable[str] = (),
        limits: Mapping[str, int] | None = None,
        blocked_patterns: Iterable[str] = (),
        max_customers_per_event: int = 5,
        default_region: str = "US",
    ) -> IdentityRules:
        """Defaults plus configuration; custom types rank just above ``anonymous_id``.

        Raises ``ValueError`` naming a bad type, limit, pattern or region.
        """
        custom = tuple(custom_types)
        for name in custom:
            if not CUSTOM_TYPE.fullmatch(name) or name in BUILT_IN_TYPES:
                raise ValueError(
                    f"custom identifier type {name!r} must match "
                    f"{CUSTOM_TYPE.pattern} and not be built in"
                )
        priority = (*DEFAULT_PRIORITY[:-1], *custom, DEFAULT_PRIORITY[-1])
        merged_limits = {**DEFAULT_LIMITS, **dict.fromkeys(custom, DEFAULT_CUSTOM_LIMIT)}
        for name, limit in (limits or {}).items():
            if name not in priority:
                raise ValueError(f"limit for unknown identifier type {name!r}")
            if limit < 1:
                raise ValueError(f"limit for {name} must be at least 1, got {limit}")
            merged_limits[name] = limit
        patterns = []
        for pattern in (*DEFAULT_BLOCKED_PATTERNS, *blocked_patterns):
            try:
                patterns.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(f"blocked pattern {pattern!r} is not a regex: {exc}") from None
        if max_customers_per_event < 2:
            raise ValueError("max customers per event must be at least 2")
        if phonenumbers.country_code_for_region(default_region) == 0:
            raise ValueError(f"default phone region {default_region!r} is not a region code")
        return cls(
            priority=priority,
            limits=merged_limits,
            blocked=tuple(patterns),
            max_customers_per_event=max_customers_per_event,
            default_region=default_region,
        )

    def rank(self, type_: str) -> int:
        """0 for the strongest type; larger is weaker."""
        return self.priority.index(type_)

    def limit(self, type_: str) -> int:
        """How many identifiers of ``type_`` one customer may hold."""
        return self.limits.get(type_, DEFAULT_CUSTOM_LIMIT)

    def is_blocked(self, value: str) -> bool:
        """True for placeholder values that must never link anything."""
        return any(p.search(value) for p in self.blocked)

    def normalize(self, type_: str, value: str) -> str:
        """The canonical form of a value; :class:`InvalidArgument` with the reason otherwise.

        Messages never repeat an e-mail or phone number: they end up in logs.
        """
        if type_ not in self.priority:
            raise InvalidArgument(
                f"unknown identifier type {type_!r}; expected one of {', '.join(self.priority)}"
            )
        cleaned = value.strip()
        if not cleaned:
            raise InvalidArgument(f"{type_} must not be empty")
        if len(cleaned) > MAX_VALUE_LENGTH:
            raise InvalidArgument(f"{type_} is longer than {MAX_VALUE_LENGTH} characters")
        if type_ == "email":
            return self._email(cleaned)
        if type_ == "phone":
            return self._phone(cleaned)
        return cleaned

    @staticmethod
    def _email(value: str) -> str:
        # Plus-addresses are kept: ada+news@ and ada@ may be different inboxes.
        lowered = value.lower()
        if not _EMAIL.match(lowered):
            raise InvalidArgument("email is not a valid address (expected name@domain.tld)")
        return lowered

    def _phone(self, value: str) -> str:
        try:
            parsed = phonenumbers.parse(value, self.default_region)
        except phonenumbers.NumberParseException:
            raise InvalidArgument("phone cannot be parsed as a phone number") from None
        if not phonenumbers.is_valid_number(parsed):
            raise InvalidArgument(
                f"phone is not a valid number (default region {self.default_region})"
            )
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
