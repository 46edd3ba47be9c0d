"""Google Wallet passes as the wallet uses them: a new pass inserts its class (once per
template and kind) and object before the save link is handed out; a change patches the
object (``NOTIFY_ON_UPDATE``) and adds a ``TEXT_AND_NOTIFY`` message for every announced
field change, with the same texts the Apple lock screen shows. An offer that became an
event ticket gets a ticket object of its own, linked from the offer.

Google colours a loyalty card by its class, not its object, so loyalty cards get one class
per template and tier (coloured like the Apple card of that tier), and a tier change moves
the object to the new tier's class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.platform.errors import InvalidArgument
from services.wallet.applepass import JsonObject, PassContent, PassField
from services.wallet.google import (
    Resource,
    class_id,
    google_class,
    google_object,
    object_id,
    resource_for,
)
from services.wallet.passes import pass_content
from services.wallet.records import GoogleIds, NewPass, StoredPass
from services.wallet.templates import PassKind, template_named

LOGO_PATH = "/images/logo.png"


# Which spoken changes lead a Google message (most important first).
_PRIORITY = ("tier", "event", "status", "message", "offers", "points", "cashback")


def message_rank(key: str) -> int:
    return _PRIORITY.index(key) if key in _PRIORITY else len(_PRIORITY)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _shown(item: PassField) -> str:
    if item.currency and isinstance(item.value, int | float):
        return f"{item.value:.2f} {item.currency}"
    return str(item.value)


def announced(content: PassContent) -> dict[str, tuple[str, str]]:
    """Field key -> (value shown, lock-screen text) of every field that speaks on change."""
    found: dict[str, tuple[str, str]] = {}
    for area in (content.header, content.primary, content.secondary, content.auxiliary):
        for item in area:
            if item.change_message:
                found[item.key] = (_shown(item), item.change_message.replace("%@", _shown(item)))
    for item in content.back:
        if item.change_message:
            found[item.key] = (_shown(item), item.change_message.replace("%@", _shown(item)))
    return found


class GoogleApi(Protocol):
    """The Google Wallet API as the passes use it
    (:class:`services.wallet.clients.google.GoogleWalletClient`)."""

    async def ensure_class(self, resource: Resource, body: JsonObject) -> object:
        """Insert the class, or patch it when it exists."""
        ...

    async def insert_object(self, resource: Resource, body: JsonObject) -> object:
        """Insert the object (the stored one when it exists already)."""
        ...

    async def patch_object(
        self, resource: Resource, object_id: str, body: JsonObject, *, notify: bool = True
    ) -> object:
        """Patch the object's top-level fields."""
        ...

    async def add_message(
        self, resource: Resource, object_id: str, header: str, body: str, message_id: str
    ) -> object:
        """Add a message to the pass and push it to the phone."""
        ...

    def save_link(
        self, objects: Sequence[tuple[Resource, str]], origins: Sequence[str] = ()
    ) -> str:
        """The "Save to Google Wallet" URL of already inserted objects."""
        ...


class GooglePasses:
    """Creates and updates the Google objects of Google passes."""

    def __init__(self, client: GoogleApi, issuer_id: str, web_service_url: str) -> None:
        self.client = client
        self.issuer_id = issuer_id
        self.logo_uri = web_service_url.rstrip("/") + LOGO_PATH
        self._classes: set[str] = set()

    async def _class(self, content: PassContent, doc: NewPass) -> tuple[Resource, str]:
        resource = resource_for(content.kind)
        template = template_named(doc["template"])
        name = template.name
        if content.kind is PassKind.STORE_CARD:
            tier = str(doc.get("fields", {}).get("tier", template.default_tier))
            name = f"{template.name}-{tier.lower()}"
        cid = class_id(self.issuer_id, name, content.kind)
        if cid not in self._classes:
            body = google_class(content, template, self.issuer_id, logo_uri=self.logo_uri)
            body["id"] = cid
            body["hexBackgroundColor"] = _hex(content.colours.background)
            await self.client.ensure_class(resource, body)
            self._classes.add(cid)
        return resource, cid

    async def create(self, doc: NewPass, content: PassContent) -> GoogleIds:
        """Insert the class (once) and the object of a new pass; the ids to store."""
        try:
            resource, cid = await self._class(content, doc)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        body = google_object(content, self.issuer_id, cid)
        await self.client.insert_object(resource, body)
        return {
            "resource": resource,
            "class_id": cid,
            "object_id": body["id"],
            "pushed": {k: v for k, (v, _) in announced(content).items()},
        }

    def save_link(self, doc: StoredPass) -> str:
        """The "Save to Google Wallet" link (a JWT holding only the object id)."""
        google = doc["google"]
        return self.client.save_link([(google["resource"], google["object_id"])])

    async def sync(self, doc: StoredPass) -> GoogleIds:
        """Bring the object up to date and send the messages of announced changes; returns
        the ``google`` part of the pass to store."""
        google = doc["google"].copy()
        content = pass_content(doc, "")
        resource = resource_for(content.kind)
        if resource != google["resource"]:
            google = await self._changed_kind(doc, content, google)
        _, cid = await self._class(content, doc)
        body = google_object(content, self.issuer_id, cid)
        body["id"] = google["object_id"]
        await self.client.patch_object(resource, google["object_id"], body)
        google["class_id"] = cid
        pushed = dict(google.get("pushed", {}))
        texts = []
        for key, (value, text) in sorted(
            announced(content).items(), key=lambda item: message_rank(item[0])
        ):
            if pushed.get(key) != value:
                texts.append(text)
                pushed[key] = value
        if texts:
            # One message per push: Google notifies the holder of a few messages a day only.
            await self.client.add_message(
                resource,
                google["object_id"],
                content.organization_name,
                " · ".join(texts),
                f"update-{doc['update_seq']}",
            )
        google["pushed"] = pushed
        return google

    async def _changed_kind(
        self, doc: StoredPass, content: PassContent, google: GoogleIds
    ) -> GoogleIds:
        """Google objects cannot change type: insert one of the new type, and point the old
        object at its save link."""
        resource, cid = await self._class(content, doc)
        body = google_object(content, self.issuer_id, cid)
        new_id = object_id(self.issuer_id, f"{doc['_id']}.{PassKind(doc['kind']).value}")
        body["id"] = new_id
        await self.client.insert_object(resource, body)
        link = self.client.save_link([(resource, new_id)])
        await self.client.patch_object(
            google["resource"],
            google["object_id"],
            {
                "state": "COMPLETED",
                "linksModuleData": {
                    "uris": [{"uri": link, "description": "Add your ticket", "id": "ticket"}]
                },
            },
        )
        return {"resource": resource, "class_id": cid, "object_id": new_id, "pushed": {}}
