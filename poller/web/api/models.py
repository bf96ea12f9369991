"""The API's request and response schemas (pydantic v2): what the OpenAPI document is
generated from, and the shape check on request bodies before the §3 rules
(poller.instances) validate their content."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    requestId: str = Field(description="24 hex characters; the Elements-Request-Id header")
    message: str


class ElementRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    key: str | None = Field(default=None, examples=["quickbooks"])
    id: int | None = None


class InstanceBody(BaseModel):
    """The Open Connectors `POST /instances` body (DESIGN §3)."""

    model_config = ConfigDict(extra="allow")
    name: str
    element: ElementRef | str | None = None
    providerData: dict[str, Any] | None = Field(
        default=None,
        description="{code, realmId} (the code is exchanged once) or {refreshToken, realmId}",
    )
    configuration: dict[str, Any] = Field(
        default_factory=dict,
        description="oauth.* and event.* keys; values as JSON values or strings",
    )
    tags: list[str] | None = None


class InstancePatch(BaseModel):
    """A partial update: given keys replace stored ones; a configuration key set to null is
    removed; a new providerData.code re-authenticates."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    providerData: dict[str, Any] | None = None
    configuration: dict[str, Any] | None = None
    tags: list[str] | None = None


class Element(BaseModel):
    id: int
    key: str
    name: str
    hub: str


class InstanceUser(BaseModel):
    id: int
    name: str | None


class InstanceObject(BaseModel):
    """An instance as answered (secrets `********`; providerData never echoed)."""

    id: int
    name: str
    token: str | None = Field(description="the Element token; shown to its owner only")
    element: Element
    elementId: int
    tags: list[str]
    createdDate: str | None
    updatedDate: str | None
    valid: bool
    disabled: bool
    eventsEnabled: bool
    eventsNotificationCallbackUrl: str | None
    configuration: dict[str, str | None]
    provisionInteractions: list[Any]
    externalAuthentication: str
    user: InstanceUser
    realmId: str
    status: str = Field(description="active, paused or needs_reconnect")
    resources: list[str]
    lastPolledAt: str | None
    lagSeconds: float | None


class DeleteResult(BaseModel):
    id: int
    name: str
    cancelledNotifications: int = Field(description="undelivered notifications cancelled")


class OAuthUrl(BaseModel):
    oauthUrl: str
    element: str


class DeliveryAttempt(BaseModel):
    date: str | None
    statusCode: int | None
    error: str | None
    durationMs: int | None


class FieldChange(BaseModel):
    """One field-level change of an UPDATED event (DESIGN §12)."""

    path: str = Field(
        description="RFC 6901 JSON Pointer into the new object (a removed array element: "
        "its index in the old array)",
        examples=["/BillAddr/City"],
    )
    old: Any = Field(default=None, description="the value before; absent for an added one")
    new: Any = Field(default=None, description="the value after; absent for a removed one")


class CallbackEvent(BaseModel):
    """One event of a callback message, as the callback carries it."""

    elementKey: str = Field(examples=["quickbooks"])
    eventType: str = Field(description="CREATED, UPDATED or DELETED")
    objectType: str
    objectId: str
    date: str = Field(description="the object's LastUpdatedTime")
    changes: list[FieldChange] | None = Field(
        default=None,
        description="UPDATED events of instances with event.poller.changes: what changed "
        "(SyncToken and MetaData.LastUpdatedTime left out); null when no earlier full copy "
        "of the object was kept; absent on other events",
    )


class EventRecord(BaseModel):
    """One callback message: one eventId, up to POLLER_EVENTS_PER_NOTIFICATION events."""

    id: str
    eventDate: str | None
    status: str = Field(description="NEW, DISPATCHED, NOTIFIED, FAILED or HELD")
    instanceId: int
    objectType: str
    events: list[CallbackEvent]
    providerData: str = Field(description="the callback's raw, as a JSON string")
    notifiedData: list[DeliveryAttempt]


class RedeliverResult(BaseModel):
    redelivered: int


class DeliveryConfig(BaseModel):
    url: str | None


class Delivery(BaseModel):
    """A queued delivery: a dead letter or a notification held for a 410 URL."""

    notificationId: int
    eventId: str
    instanceId: int
    status: str = Field(description="queued")
    reason: str = Field(description="dead or held")
    createdDate: str | None
    updatedDate: str | None
    config: DeliveryConfig
