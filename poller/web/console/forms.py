"""The instance form (DESIGN §3, §10): its fields in Open Connectors' order, the body it
becomes, and the service layer's refusals put back next to the field they name.

The messages are the API's own (poller.instances and poller.manage raise them); the console
only decides where to show them, by the configuration key each message names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from multidict import MultiDictProxy

from poller import resources

FIELD_OF_KEY = {
    "name": "name",
    "tags": "tags",
    "event.notification.enabled": "events_enabled",
    "event.vendor.type": "vendor_type",
    "event.notification.callback.url": "callback_url",
    "event.notification.signature.key": "signature_key",
    "event.poller.refresh_interval": "refresh_interval",
    "event.poller.urls": "resources",
    "event.poller.initial": "initial",
    "event.poller.deactivated_as_deleted": "deactivated_as_deleted",
    "event.poller.timezone": "timezone",
    "event.poller.changes": "changes",
    "providerData": "connect",
    "oauth.callback.url": "connect",
    "oauth.api.key": "connect",
    "oauth.api.secret": "connect",
}
# Longest first, so `event.poller.urls` is not taken for a shorter key it starts with.
_KEYS = sorted(FIELD_OF_KEY, key=len, reverse=True)
DEFAULT_INTERVAL = "15"


@dataclass(frozen=True)
class ResourceChoice:
    name: str
    entity: str
    extra: bool


RESOURCE_CHOICES = tuple(
    ResourceChoice(resource.name, resource.entity, resource.name not in resources.DEFAULT_NAMES)
    for resource in resources.ALL_RESOURCES.values()
)


@dataclass
class InstanceForm:
    """What the form shows and sends back (strings and flags as the browser has them)."""

    name: str = ""
    events_enabled: bool = True
    vendor_type: str = "polling"
    callback_url: str = ""
    signature_key: str = ""
    refresh_interval: str = DEFAULT_INTERVAL
    resources: list[str] = field(default_factory=lambda: list(resources.DEFAULT_NAMES))
    tags: str = ""
    initial: str = "now"
    deactivated_as_deleted: bool = False
    timezone: str = "UTC"
    changes: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_post(cls, posted: MultiDictProxy[str | Any]) -> InstanceForm:
        def text(name: str, default: str = "") -> str:
            value = posted.get(name, default)
            return value.strip() if isinstance(value, str) else default

        return cls(
            name=text("name"),
            events_enabled=posted.get("events_enabled") == "on",
            vendor_type=text("vendor_type", "polling"),
            callback_url=text("callback_url"),
            signature_key=text("signature_key"),
            refresh_interval=text("refresh_interval"),
            resources=[value for value in posted.getall("resources", []) if isinstance(value, str)],
            tags=text("tags"),
            initial=text("initial", "now"),
            deactivated_as_deleted=posted.get("deactivated_as_deleted") == "on",
            timezone=text("timezone", "UTC"),
            changes=posted.get("changes") == "on",
        )

    @classmethod
    def from_instance(cls, view: Mapping[str, Any]) -> InstanceForm:
        """The edit form of an instance object (secrets are never shown: left empty)."""
        config = view.get("configuration") or {}

        def flag(key: str, default: bool) -> bool:
            value = config.get(key)
            return default if value is None else str(value).lower() == "true"

        return cls(
            name=view["name"],
            events_enabled=bool(view.get("eventsEnabled")),
            vendor_type=str(config.get("event.vendor.type") or "polling"),
            callback_url=str(config.get("event.notification.callback.url") or ""),
            refresh_interval=str(config.get("event.poller.refresh_interval") or DEFAULT_INTERVAL),
            resources=list(view.get("resources") or []),
            tags=", ".join(view.get("tags") or []),
            initial=str(config.get("event.poller.initial") or "now"),
            deactivated_as_deleted=flag("event.poller.deactivated_as_deleted", False),
            timezone=str(config.get("event.poller.timezone") or "UTC"),
            changes=flag("event.poller.changes", False),
        )

    def tag_list(self) -> list[str]:
        return [tag.strip() for tag in self.tags.split(",") if tag.strip()]

    def configuration(self) -> dict[str, Any]:
        """The §3 configuration keys the form sets (an empty signature key sets none)."""
        config: dict[str, Any] = {
            "event.notification.enabled": self.events_enabled,
            "event.vendor.type": self.vendor_type,
            "event.notification.callback.url": self.callback_url or None,
            "event.poller.refresh_interval": self.refresh_interval or DEFAULT_INTERVAL,
            "event.poller.urls": "|".join(self.resources),
            "event.poller.initial": self.initial,
            "event.poller.deactivated_as_deleted": self.deactivated_as_deleted,
            "event.poller.timezone": self.timezone or "UTC",
            "event.poller.changes": self.changes,
        }
        if self.signature_key:
            config["event.notification.signature.key"] = self.signature_key
        return config

    def create_body(self, code: str, realm_id: str, redirect_uri: str) -> dict[str, Any]:
        config = {key: value for key, value in self.configuration().items() if value is not None}
        config["oauth.callback.url"] = redirect_uri
        config["authentication.type"] = "oauth2"
        return {
            "element": {"key": "quickbooks"},
            "providerData": {"code": code, "realmId": realm_id},
            "configuration": config,
            "tags": self.tag_list(),
            "name": self.name,
        }

    def patch(self) -> dict[str, Any]:
        """PATCH semantics (poller.manage.instances.update): a None value removes the key."""
        return {"name": self.name, "tags": self.tag_list(), "configuration": self.configuration()}

    def refuse(self, message: str) -> None:
        """Puts the service layer's message next to the field it names (or on top)."""
        self.errors[field_of(message)] = message


def field_of(message: str) -> str:
    """The form field a refusal is about: the first configuration key it names, as
    `key=value` after the instance prefix, or `key:` at its start; `form` otherwise."""
    _, _, rest = message.partition(": ") if message.startswith("instance") else ("", "", message)
    for key in _KEYS:
        if rest.startswith((f"{key}=", f"{key}:", f"{key}.", f"{key}[")):
            return FIELD_OF_KEY[key]
    for key in _KEYS:
        if f": {key}=" in message:
            return FIELD_OF_KEY[key]
    if "already exists" in message:
        return "name"
    return "form"
