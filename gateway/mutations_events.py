"""Mutations that record what customers do: ``track``, ``identify`` and ``alias`` through the
same intake as the HTTP ingest API (same validation, event ids and Kafka topic), and
``setConsent``. Each needs ``write:events``."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.consent import Consent
from gateway.errors import SERVICE_UNAVAILABLE, client_error
from gateway.intake import EventIntake
from gateway.mutation_errors import call, input_error
from gateway.scopes import Scope, needs
from gateway.segment import InvalidEvent
from lodestar.v1 import profile_pb2
from services.platform.errors import BusUnavailable

_WRITE_EVENTS = [needs(Scope.WRITE_EVENTS)]
_TIMESTAMP = "When it happened (ISO-8601); at most a day ahead, not before 2000. Default: now."
_MESSAGE_ID = "Your id of the call: a retry of the same call with it is the same event."


@strawberry.type(description="An event taken: Kafka acknowledged it, the services follow.")
class EventAccepted:
    accepted: bool
    event_id: str = strawberry.field(
        description="The event's id (derived from messageId and the content when given)."
    )
    message_id: str | None


def _call(**fields: Any) -> dict[str, Any]:
    """A Segment call of the given fields, leaving out those not given."""
    return {key: value for key, value in fields.items() if value is not None}


def _request_ip(info: Info, intake: EventIntake) -> str:
    request = info.context.get("request")
    client = getattr(request, "client", None)
    headers = getattr(request, "headers", None)
    forwarded = ",".join(headers.getlist("x-forwarded-for")) if headers is not None else ""
    return intake.client_ip(client.host if client else None, forwarded)


async def _take(info: Info, kind: str, call: dict[str, Any]) -> EventAccepted:
    """Build the call's event as the HTTP API would and produce it."""
    intake: EventIntake | None = info.context.get("intake")
    if intake is None:
        # An app built without the event bus (a read-only gateway) takes no events.
        raise client_error("this gateway takes no events; retry shortly", SERVICE_UNAVAILABLE)
    try:
        key, event = intake.build(
            call,
            kind,
            client_ip=_request_ip(info, intake),
            max_bytes=intake.settings.max_event_bytes,
        )
    except InvalidEvent as exc:
        raise _invalid(exc) from None
    try:
        await intake.produce(kind, [(key, event)])
    except BusUnavailable:
        raise client_error(
            "the event bus is unavailable; retry with backoff", SERVICE_UNAVAILABLE
        ) from None
    return EventAccepted(
        accepted=True, event_id=event.event_id, message_id=event.message_id or None
    )


def _invalid(exc: InvalidEvent) -> GraphQLError:
    path = exc.path if exc.path and exc.path != "body" else ""
    json_path = "$" + ("" if not path else path if path.startswith("[") else f".{path}")
    return input_error(str(exc), json_path)


@strawberry.type
class EventMutation:
    @strawberry.field(
        description="Record that a customer did something (a Segment track call). Needs "
        "write:events.",
        permission_classes=_WRITE_EVENTS,
    )
    async def track(
        self,
        info: Info,
        *,
        event: str,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        properties: JSON | None = None,
        timestamp: Annotated[str | None, strawberry.argument(description=_TIMESTAMP)] = None,
        message_id: Annotated[str | None, strawberry.argument(description=_MESSAGE_ID)] = None,
        context: JSON | None = None,
        integrations: JSON | None = None,
    ) -> EventAccepted:
        call = _call(
            userId=user_id,
            anonymousId=anonymous_id,
            event=event,
            properties=properties,
            timestamp=timestamp,
            messageId=message_id,
            context=context,
            integrations=integrations,
        )
        return await _take(info, "track", call)

    @strawberry.field(
        description="Tell who a customer is and their traits (a Segment identify call). Needs "
        "write:events.",
        permission_classes=_WRITE_EVENTS,
    )
    async def identify(
        self,
        info: Info,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: JSON | None = None,
        timestamp: Annotated[str | None, strawberry.argument(description=_TIMESTAMP)] = None,
        message_id: Annotated[str | None, strawberry.argument(description=_MESSAGE_ID)] = None,
        context: JSON | None = None,
        integrations: JSON | None = None,
    ) -> EventAccepted:
        call = _call(
            userId=user_id,
            anonymousId=anonymous_id,
            traits=traits,
            timestamp=timestamp,
            messageId=message_id,
            context=context,
            integrations=integrations,
        )
        return await _take(info, "identify", call)

    @strawberry.field(
        description="Join a previous id (e.g. the anonymous one) to userId (a Segment alias "
        "call). Needs write:events.",
        permission_classes=_WRITE_EVENTS,
    )
    async def alias(
        self,
        info: Info,
        *,
        user_id: str,
        previous_id: str,
        timestamp: Annotated[str | None, strawberry.argument(description=_TIMESTAMP)] = None,
        message_id: Annotated[str | None, strawberry.argument(description=_MESSAGE_ID)] = None,
        context: JSON | None = None,
        integrations: JSON | None = None,
    ) -> EventAccepted:
        call = _call(
            userId=user_id,
            previousId=previous_id,
            timestamp=timestamp,
            messageId=message_id,
            context=context,
            integrations=integrations,
        )
        return await _take(info, "alias", call)

    @strawberry.field(
        description="Record a consent decision for one purpose (email_marketing, "
        "wallet_marketing, sms_marketing, analytics or personalization; state granted or "
        "denied); returns the customer's consent now. Needs write:events.",
        permission_classes=_WRITE_EVENTS,
    )
    async def set_consent(
        self,
        info: Info,
        *,
        customer_id: strawberry.ID,
        purpose: str,
        state: str,
        # Not named source in Python: the permission extension passes its own ``source``.
        consent_source: Annotated[
            str, strawberry.argument(name="source", description="Who recorded it.")
        ] = "graphql",
    ) -> list[Consent]:
        profile = await call(
            info.context["clients"].profile.SetConsent,
            lambda: profile_pb2.SetConsentRequest(
                customer_id=str(customer_id), purpose=purpose, state=state, source=consent_source
            ),
        )
        return [Consent.of(c) for c in profile.consent]
