"""The routes of DESIGN §9 under /elements/api-v2: one table, read by the router and by the
OpenAPI generator (so the document and the routes cannot disagree)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ValidationError

from poller.config import Settings
from poller.errors import ConfigError
from poller.instances import precheck
from poller.logs import escape_controls
from poller.manage.errors import NotFound
from poller.manage.events import EventManager
from poller.manage.instances import InstanceManager, parse_page_size
from poller.web.api import models
from poller.web.api.auth import CALLER_KEY, ELEMENT_KEY
from poller.web.api.conventions import NO_BODY, ApiError, json_response, read_json

BASE_PATH = "/elements/api-v2"
NEXT_PAGE_HEADER = "Elements-Next-Page-Token"
RETURNED_COUNT_HEADER = "Elements-Returned-Count"
MAX_ID = 2**63 - 1
QBO_SCOPE = "com.intuit.quickbooks.accounting"


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    where: str = "query"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as OpenAPI writes it, relative to BASE_PATH
    handler: str  # a method of ApiHandlers
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    many: bool = False  # the response is a list of `response`
    public: bool = False  # no Authorization needed
    element: bool = False  # needs an `Element <token>` part
    params: tuple[Param, ...] = ()

    @property
    def router_path(self) -> str:
        return self.path.replace("{id}", r"{id:\d+}")


PAGING = (
    Param("pageSize", "results per page, 1 to 500 (default 200)"),
    Param("nextPage", "the Elements-Next-Page-Token of the previous page"),
)
ID = (Param("id", "the instance id", "path"),)
OAUTH = (
    Param("apiKey", "the Intuit app's client id (default QBO_CLIENT_ID)"),
    Param("apiSecret", "accepted and ignored: the consent URL carries no secret"),
    Param("callbackUrl", "the redirect URI registered with the Intuit app"),
    Param("scope", f"default {QBO_SCOPE}"),
    Param("state", "default quickbooks"),
)

EVENT_ID = (Param("eventId", "the event record's id (the callback's eventId)", "path"),)
EVENT_FILTERS = (
    Param("from", "detected at or after (ISO-8601)"),
    Param("to", "detected at or before (ISO-8601)"),
    Param("eventType", "CREATED, UPDATED or DELETED: records holding such an event"),
    Param("objectType", "the resource, e.g. invoices"),
    Param("objectId", "records holding an event of that object"),
    Param("status", "NEW, DISPATCHED, NOTIFIED, FAILED or HELD"),
)
WHERE = (
    Param(
        "where",
        "status = 'queued' (dead or held), status = 'dead', status = 'held' and "
        "config.url = '<url>', joined by and",
    ),
)

ROUTES: tuple[Route, ...] = (
    Route("POST", "/instances", "create", "Create an instance (the Open Connectors body)",
          models.InstanceBody, models.InstanceObject),
    Route("POST", "/elements/quickbooks/instances", "create_quickbooks",
          "Create an instance (element may be left out)",
          models.InstanceBody, models.InstanceObject),
    Route("GET", "/instances", "list", "The caller's instances (an admin: all)",
          response=models.InstanceObject, many=True, params=PAGING),
    Route("PATCH", "/instances", "patch_by_token", "Update the Element token's instance",
          models.InstancePatch, models.InstanceObject, element=True),
    Route("PUT", "/instances/enabled", "enable_by_token", "Resume the Element token's instance",
          response=models.InstanceObject, element=True),
    Route("DELETE", "/instances/enabled", "disable_by_token",
          "Pause the Element token's instance", response=models.InstanceObject, element=True),
    Route("GET", "/instances/{id}", "get", "One instance",
          response=models.InstanceObject, params=ID),
    Route("PATCH", "/instances/{id}", "patch", "Partial update; takes effect within seconds",
          models.InstancePatch, models.InstanceObject, params=ID),
    Route("PUT", "/instances/{id}", "put", "Full replacement",
          models.InstanceBody, models.InstanceObject,
          params=(*ID, Param("reAuthenticate", "false keeps the stored tokens"))),
    Route("DELETE", "/instances/{id}", "delete",
          "Stop polling, remove the instance, cancel its undelivered notifications",
          response=models.DeleteResult, params=ID),
    Route("PUT", "/instances/{id}/enabled", "enable", "Resume polling",
          response=models.InstanceObject, params=ID),
    Route("DELETE", "/instances/{id}/enabled", "disable",
          "Pause polling (watermarks kept; queued callbacks still delivered)",
          response=models.InstanceObject, params=ID),
    Route("GET", "/elements/quickbooks/oauth/url", "oauth_url", "Intuit's consent URL",
          response=models.OAuthUrl, params=OAUTH),
    Route("POST", "/elements/quickbooks/oauth/url", "oauth_url", "Intuit's consent URL",
          response=models.OAuthUrl, params=OAUTH),
    Route("GET", "/instances/events", "events", "Event records of the caller's instances",
          response=models.EventRecord, many=True, params=(*PAGING, *EVENT_FILTERS)),
    Route("GET", "/instances/events/{eventId}", "event", "One event record",
          response=models.EventRecord, params=EVENT_ID),
    Route("GET", "/instances/{id}/events", "instance_events", "An instance's event records",
          response=models.EventRecord, many=True, params=(*ID, *PAGING, *EVENT_FILTERS)),
    Route("GET", "/instances/{id}/events/{eventId}", "instance_event", "One event record",
          response=models.EventRecord, params=(*ID, *EVENT_ID)),
    Route("POST", "/instances/{id}/events/{eventId}/redeliver", "redeliver",
          "Deliver that event's notification again", response=models.RedeliverResult,
          params=(*ID, *EVENT_ID)),
    Route("GET", "/notifications/subscriptions/deliveries", "deliveries",
          "Queued (dead or held) deliveries", response=models.Delivery, many=True, params=WHERE),
    Route("PUT", "/notifications/subscriptions/deliveries", "redeliver_queued",
          "Redeliver the queued deliveries that `where` selects",
          response=models.RedeliverResult, params=WHERE),
    Route("GET", "/openapi.json", "openapi", "This document (OpenAPI 3.1)", public=True),
    Route("GET", "/docs", "docs", "A readable page of this document", public=True),
)  # fmt: skip


def consent_url(
    settings: Settings, client_id: str, redirect_uri: str, state: str, scope: str = QBO_SCOPE
) -> str:
    """Intuit's consent page (QBO_OAUTH_AUTHORIZE_URL) for an authorization code; the API's
    oauth/url route and the console's "Connect to QuickBooks" both send users there."""
    params = {
        "client_id": client_id,
        "response_type": "code",
        "scope": scope,
        "redirect_uri": redirect_uri,
        "state": state,
    }
    return f"{settings.qbo_oauth_authorize_url}?{urlencode(params)}"


def path_id(request: web.Request, name: str = "id") -> int:
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise NotFound(f"no instance with id {request.match_info[name][:20]}")
    return value


def validated(model: type[BaseModel], body: Any) -> Any:
    """The input limits and types of DESIGN §3 (poller.instances.precheck: the same lines as
    a file gets), then the shape check of `model`, whose message names the key, never the
    value."""
    if isinstance(body, dict):
        try:
            precheck(body)
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
    try:
        model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiError(400, f"{escape_controls(where)[:200]}: {first['msg']}") from None
    return body


class ApiHandlers:
    def __init__(
        self,
        manager: InstanceManager,
        events_manager: EventManager,
        settings: Settings,
        document: Any,
        page: str,
    ) -> None:
        self.manager = manager
        self.events_manager = events_manager
        self.settings = settings
        self.document = document
        self.page = page

    def _element(self, request: web.Request) -> int:
        if ELEMENT_KEY not in request:
            raise ApiError(400, "this route acts on one instance: add `, Element <token>`")
        return request[ELEMENT_KEY]

    async def create(self, request: web.Request) -> web.Response:
        body = validated(models.InstanceBody, await read_json(request))
        view = await self.manager.create(request[CALLER_KEY], body)
        return json_response(view, request)

    async def create_quickbooks(self, request: web.Request) -> web.Response:
        body = validated(models.InstanceBody, await read_json(request))
        body.setdefault("element", {"key": "quickbooks"})
        view = await self.manager.create(request[CALLER_KEY], body)
        return json_response(view, request)

    async def list(self, request: web.Request) -> web.Response:
        size = parse_page_size(request.query.get("pageSize"))
        page = await self.manager.list(request[CALLER_KEY], size, request.query.get("nextPage"))
        headers = {RETURNED_COUNT_HEADER: str(len(page.items))}
        if page.next_page is not None:
            headers[NEXT_PAGE_HEADER] = page.next_page
        return json_response(page.items, request, headers=headers)

    async def get(self, request: web.Request) -> web.Response:
        return json_response(await self.manager.get(request[CALLER_KEY], path_id(request)), request)

    async def patch(self, request: web.Request) -> web.Response:
        return await self._patch(request, path_id(request))

    async def patch_by_token(self, request: web.Request) -> web.Response:
        return await self._patch(request, self._element(request))

    async def _patch(self, request: web.Request, instance_id: int) -> web.Response:
        body = validated(models.InstancePatch, await read_json(request))
        view = await self.manager.update(request[CALLER_KEY], instance_id, body)
        return json_response(view, request)

    async def put(self, request: web.Request) -> web.Response:
        body = validated(models.InstanceBody, await read_json(request))
        reauthenticate = request.query.get("reAuthenticate", "true").strip().lower() != "false"
        view = await self.manager.replace(
            request[CALLER_KEY], path_id(request), body, reauthenticate
        )
        return json_response(view, request)

    async def delete(self, request: web.Request) -> web.Response:
        deleted = await self.manager.delete(request[CALLER_KEY], path_id(request))
        body = {
            "id": deleted.instance_id,
            "name": deleted.name,
            "cancelledNotifications": deleted.cancelled_notifications,
        }
        return json_response(body, request)

    async def enable(self, request: web.Request) -> web.Response:
        return await self._enabled(request, path_id(request), True)

    async def disable(self, request: web.Request) -> web.Response:
        return await self._enabled(request, path_id(request), False)

    async def enable_by_token(self, request: web.Request) -> web.Response:
        return await self._enabled(request, self._element(request), True)

    async def disable_by_token(self, request: web.Request) -> web.Response:
        return await self._enabled(request, self._element(request), False)

    async def _enabled(self, request: web.Request, instance_id: int, on: bool) -> web.Response:
        if await read_json(request, required=False) is not NO_BODY:
            raise ApiError(400, "this route takes no body")
        view = await self.manager.set_enabled(request[CALLER_KEY], instance_id, on)
        return json_response(view, request)

    async def oauth_url(self, request: web.Request) -> web.Response:
        query = request.query
        client_id = query.get("apiKey") or self.settings.qbo_client_id
        callback = query.get("callbackUrl")
        if not client_id:
            raise ApiError(400, "apiKey: missing (and QBO_CLIENT_ID is not set)")
        if not callback:
            raise ApiError(400, "callbackUrl: missing (the app's redirect URI)")
        url = consent_url(
            self.settings,
            client_id,
            callback,
            query.get("state") or "quickbooks",
            query.get("scope") or QBO_SCOPE,
        )
        return json_response({"oauthUrl": url, "element": "quickbooks"}, request)

    async def events(self, request: web.Request) -> web.Response:
        return await self._events(request, None)

    async def instance_events(self, request: web.Request) -> web.Response:
        return await self._events(request, path_id(request))

    async def _events(self, request: web.Request, instance_id: int | None) -> web.Response:
        size = parse_page_size(request.query.get("pageSize"))
        records, next_page = await self.events_manager.search(
            request[CALLER_KEY], instance_id, request.query, size, request.query.get("nextPage")
        )
        headers = {RETURNED_COUNT_HEADER: str(len(records))}
        if next_page is not None:
            headers[NEXT_PAGE_HEADER] = next_page
        return json_response(records, request, headers=headers)

    async def event(self, request: web.Request) -> web.Response:
        record = await self.events_manager.get(request[CALLER_KEY], request.match_info["eventId"])
        return json_response(record, request)

    async def instance_event(self, request: web.Request) -> web.Response:
        record = await self.events_manager.get(
            request[CALLER_KEY], request.match_info["eventId"], path_id(request)
        )
        return json_response(record, request)

    async def redeliver(self, request: web.Request) -> web.Response:
        count = await self.events_manager.redeliver(
            request[CALLER_KEY], path_id(request), request.match_info["eventId"]
        )
        return json_response({"redelivered": count}, request)

    async def deliveries(self, request: web.Request) -> web.Response:
        listed = await self.events_manager.queued(request[CALLER_KEY], request.query.get("where"))
        headers = {RETURNED_COUNT_HEADER: str(len(listed))}
        return json_response(listed, request, headers=headers)

    async def redeliver_queued(self, request: web.Request) -> web.Response:
        count = await self.events_manager.redeliver_queued(
            request[CALLER_KEY], request.query.get("where")
        )
        return json_response({"redelivered": count}, request)

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(self.document, request)

    async def docs(self, request: web.Request) -> web.Response:
        response = web.Response(text=self.page, content_type="text/html")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'"
        )
        return response
