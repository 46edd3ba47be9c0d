"""Which customer data is personal (PII): the one list the gateway masks and segmentation
refuses to segment on by default."""

from __future__ import annotations

from typing import Final

# Trait (and event property) names whose values identify a person.
PII_TRAITS: Final = frozenset(
    {
        "email",
        "phone",
        "firstName",
        "lastName",
        "first_name",
        "last_name",
        "name",
        "address",
        "birthday",
    }
)
# Identifier types whose values identify a person.
PII_IDENTIFIER_TYPES: Final = frozenset({"email", "phone"})
