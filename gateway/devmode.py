"""What only dev mode (``LODESTAR_GATEWAY_GRAPHIQL``, on under ``make run``) shows: schema
introspection and "Did you mean ...?" suggestions. In production both would map the schema
for anyone holding any key, so introspection is refused and suggestions are cut."""

from __future__ import annotations

import re
from collections.abc import Iterator

from strawberry.extensions import DisableIntrospection, SchemaExtension
from strawberry.schema.config import StrawberryConfig

from gateway.settings import GatewaySettings

# graphql-core's suggestion tail: " Did you mean 'a', 'b' or 'c'?"
_SUGGESTION = re.compile(r"\s*Did you mean .*\?\s*$", re.DOTALL)


def without_suggestion(message: str) -> str:
    """``message`` without its "Did you mean ...?" tail."""
    return _SUGGESTION.sub("", message)


class NoSuggestions(SchemaExtension):
    """Removes suggestions from every request error (unknown fields, arguments, types and
    enum values alike; Strawberry's own switch covers unknown fields only)."""

    def on_operation(self) -> Iterator[None]:
        """After the operation: rewrite the messages of its errors."""
        yield
        result = self.execution_context.result
        for error in getattr(result, "errors", None) or ():
            if "Did you mean" in error.message:
                error.message = without_suggestion(error.message)


def dev_mode_only(settings: GatewaySettings) -> list[type[SchemaExtension]]:
    """The extensions that hide the schema outside dev mode; none in dev mode."""
    return [] if settings.graphiql else [DisableIntrospection, NoSuggestions]


def schema_config(settings: GatewaySettings) -> StrawberryConfig:
    """Strawberry's config: field suggestions only in dev mode."""
    return StrawberryConfig(disable_field_suggestions=not settings.graphiql)
