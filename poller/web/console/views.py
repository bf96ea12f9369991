"""The console's pages (DESIGN §10), in Open Connectors' order: sign in → Connect to
QuickBooks → the instance form → Create Instance; then Instances, an instance, its event log,
Deliveries. Handlers read forms and render templates; every decision is poller.manage's."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import orjson
from aiohttp import web

from poller import logs, metrics
from poller.config import Settings
from poller.manage.errors import InvalidRequest, ManageError, NotFound
from poller.manage.events import EventManager
from poller.manage.instances import InstanceManager
from poller.manage.overview import NO_COUNTS, Overview
from poller.manage.sessions import (
    PURPOSE_NEW,
    Consent,
    Session,
    SessionManager,
    reconnect_purpose,
)
from poller.web.api.auth import Authenticator
from poller.web.api.routes import MAX_ID, consent_url
from poller.web.console.forms import RESOURCE_CHOICES, InstanceForm

log = logs.get_logger(__name__)

SESSION_KEY = web.RequestKey("console_session", Session)
# The OAuth callback checks its session itself (see oauth_callback).
PUBLIC_PATHS = ("/signin", "/static/", "/oauth/callback")
CALLBACK_PATH = "/ui/oauth/callback"
EVENTS_PAGE = 50
DELIVERIES_WHERE = "status = 'queued'"
# Fixed notices after a redirect (the query names one; nothing from it is shown).
NOTICES = {
    "created": "Instance created: it polls QuickBooks from now on.",
    "updated": "Saved.",
    "paused": "Paused: no requests go to QuickBooks until you resume.",
    "resumed": "Resumed.",
    "polled": "Poll requested: the instance polls within a few seconds.",
    "reconnected": "Reconnected to QuickBooks.",
    "deleted": "Instance deleted.",
    "redelivered": "Redelivery queued.",
}


@dataclass(frozen=True)
class CookieNames:
    session: str
    signin: str
    secure: bool


def cookie_names(settings: Settings) -> CookieNames:
    """On https the cookies are Secure and carry the `__Secure-` prefix (a browser refuses
    such a cookie from plain http)."""
    secure = settings.console_url().startswith("https://")
    prefix = "__Secure-" if secure else ""
    return CookieNames(f"{prefix}qbo_console", f"{prefix}qbo_console_signin", secure)


def signin_csrf_ok(request: web.Request, names: CookieNames, offered: str | None) -> bool:
    """The sign-in form's token: the same random value in a cookie and in the form."""
    cookie = request.cookies.get(names.signin)
    if not cookie or offered is None:
        return False
    return hmac.compare_digest(cookie.encode(), offered.encode())


def _id(request: web.Request, name: str = "id") -> int:
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise NotFound(f"no instance with id {value}")
    return value


class Console:
    def __init__(
        self,
        settings: Settings,
        instances: InstanceManager,
        events: EventManager,
        overview: Overview,
        sessions: SessionManager,
        authenticator: Authenticator,
    ) -> None:
        self.settings = settings
        self.instances = instances
        self.events = events
        self.overview = overview
        self.sessions = sessions
        self.authenticator = authenticator
        self.names = cookie_names(settings)
        self.redirect_uri = settings.console_url() + CALLBACK_PATH

    def add_routes(self, ui: web.Application) -> None:
        add = ui.router.add_route
        number = r"{id:\d+}"
        add("GET", "/", self.home)
        add("GET", "/signin", self.signin_page)
        add("POST", "/signin", self.signin)
        add("POST", "/signout", self.signout)
        add("GET", "/instances", self.instances_page)
        add("GET", "/instances/new", self.new_page)
        add("POST", "/instances/new", self.create)
        add("POST", "/connect", self.connect)
        add("GET", "/oauth/callback", self.oauth_callback)
        add("GET", f"/instances/{number}", self.instance_page)
        add("GET", f"/instances/{number}/edit", self.edit_page)
        add("POST", f"/instances/{number}/edit", self.edit)
        add("POST", f"/instances/{number}/pause", self.pause)
        add("POST", f"/instances/{number}/resume", self.resume)
        add("POST", f"/instances/{number}/poll", self.poll_now)
        add("POST", f"/instances/{number}/reconnect", self.reconnect)
        add("GET", f"/instances/{number}/delete", self.delete_page)
        add("POST", f"/instances/{number}/delete", self.delete)
        add("GET", f"/instances/{number}/events", self.events_page)
        add("GET", f"/instances/{number}/events/rows", self.event_rows)
        add("GET", f"/instances/{number}/events/{{event}}", self.event_page)
        add("POST", f"/instances/{number}/events/{{event}}/redeliver", self.redeliver)
        add("GET", "/deliveries", self.deliveries_page)
        add("POST", "/deliveries/redeliver", self.redeliver_deliveries)

    # --- rendering ----------------------------------------------------------------------

    def render(
        self, template: str, request: web.Request, context: dict[str, Any], status: int = 200
    ) -> web.Response:
        session = request.get(SESSION_KEY)
        notice = NOTICES.get(request.query.get("done", ""))
        base = {
            "session": session,
            "caller": session.caller if session else None,
            "csrf": session.csrf_token if session else "",
            "notice": notice,
        }
        return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)

    def error_page(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.render("error.html", request, {"status": status, "message": message}, status)

    @staticmethod
    def session(request: web.Request) -> Session:
        return request[SESSION_KEY]

    # --- signing in ---------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/instances")

    async def signin_page(self, request: web.Request, error: str = "") -> web.Response:
        token = secrets.token_urlsafe(24)
        response = self.render(
            "signin.html",
            request,
            {"signin_token": token, "error": error},
            status=401 if error else 200,
        )
        response.set_cookie(
            self.names.signin,
            token,
            path="/ui",
            httponly=True,
            samesite="Strict",
            secure=self.names.secure,
        )
        return response

    async def signin(self, request: web.Request) -> web.StreamResponse:
        """The API's checks (both secrets, constant time) and the API's throttle."""
        throttle = self.authenticator.throttle
        address = request.remote or "unknown"
        if throttle.blocked(address) is not None:
            metrics.API_AUTH_FAILURES.labels("throttled").inc()
            response = await self.signin_page(
                request, "Too many failed sign-ins from this address; try again in a minute."
            )
            response.set_status(429)
            return response
        posted = await request.post()
        user_secret = posted.get("user_secret")
        organization_secret = posted.get("organization_secret")
        caller = None
        if isinstance(user_secret, str) and isinstance(organization_secret, str):
            caller = await self.authenticator.check_secrets(
                user_secret.strip(), organization_secret.strip()
            )
        if caller is None:
            throttle.failed(address)
            metrics.API_AUTH_FAILURES.labels("invalid").inc()
            return await self.signin_page(request, "Invalid user secret or organization secret.")
        session_id = await self.sessions.start(caller)
        log.info("console_signed_in", user=caller.name)
        response = web.HTTPFound("/ui/instances")
        response.set_cookie(
            self.names.session,
            session_id,
            path="/ui",
            httponly=True,
            samesite="Strict",
            secure=self.names.secure,
        )
        response.del_cookie(self.names.signin, path="/ui")
        raise response

    async def signout(self, request: web.Request) -> web.StreamResponse:
        await self.sessions.end(self.session(request).session_id)
        response = web.HTTPFound("/ui/signin")
        response.del_cookie(self.names.session, path="/ui")
        raise response

    # --- instances ----------------------------------------------------------------------

    async def instances_page(self, request: web.Request) -> web.Response:
        caller = self.session(request).caller
        page = await self.instances.list(caller, 200, request.query.get("nextPage"))
        counts = await self.overview.counts(caller, [item["id"] for item in page.items])
        rows = [(item, counts.get(item["id"], NO_COUNTS)) for item in page.items]
        return self.render("instances.html", request, {"rows": rows, "next_page": page.next_page})

    async def instance_page(self, request: web.Request) -> web.Response:
        caller = self.session(request).caller
        instance_id = _id(request)
        view = await self.instances.get(caller, instance_id)
        counts = (await self.overview.counts(caller, [instance_id])).get(instance_id, NO_COUNTS)
        return self.render("instance.html", request, {"inst": view, "counts": counts})

    async def new_page(self, request: web.Request) -> web.Response:
        consent = await self.sessions.consent(self.session(request))
        if consent is not None and consent.purpose != PURPOSE_NEW:
            consent = None
        return self._form(request, InstanceForm(), consent)

    def _form(
        self,
        request: web.Request,
        form: InstanceForm,
        consent: Consent | None,
        instance: dict[str, Any] | None = None,
        status: int = 200,
    ) -> web.Response:
        context = {
            "form": form,
            "consent": consent,
            "inst": instance,
            "choices": RESOURCE_CHOICES,
            "client_id_missing": not self.settings.qbo_client_id,
        }
        return self.render("form.html", request, context, status)

    async def connect(self, request: web.Request) -> web.StreamResponse:
        """Connect to QuickBooks: Intuit's consent page with a state bound to this session."""
        session = self.session(request)
        client_id = self.settings.qbo_client_id
        if not client_id:
            raise InvalidRequest(
                "QBO_CLIENT_ID is not set: the console needs the Intuit app's client id to "
                "send you to QuickBooks"
            )
        state = await self.sessions.begin_consent(session, PURPOSE_NEW)
        raise web.HTTPFound(consent_url(self.settings, client_id, self.redirect_uri, state))

    async def reconnect(self, request: web.Request) -> web.StreamResponse:
        session = self.session(request)
        instance_id = _id(request)
        view = await self.instances.get(session.caller, instance_id)
        client_id = view["configuration"].get("oauth.api.key") or self.settings.qbo_client_id
        if not client_id:
            raise InvalidRequest("oauth.api.key: missing (and QBO_CLIENT_ID is not set)")
        state = await self.sessions.begin_consent(session, reconnect_purpose(instance_id))
        raise web.HTTPFound(consent_url(self.settings, client_id, self.redirect_uri, state))

    async def oauth_callback(self, request: web.Request) -> web.StreamResponse:
        """Back from Intuit with `code` and `realmId` (or `error`) and our `state`."""
        query = request.query
        session = request.get(SESSION_KEY)
        if session is None:
            return self._same_site_again(request)
        state = query.get("state", "")
        code = query.get("code") or None
        error = query.get("error")
        purpose = await self.sessions.finish_consent(
            session, state, None if error else code, query.get("realmId")
        )
        if purpose is None:
            return self.error_page(
                request,
                400,
                "This QuickBooks consent was not started from this session (the state does "
                "not match). Start again with Connect to QuickBooks.",
            )
        if error or code is None or not query.get("realmId"):
            await self.sessions.clear_consent(session)
            description = query.get("error_description") or "no description"
            message = f"QuickBooks did not connect: {error or 'no code'} ({description[:200]})"
            return self.error_page(request, 400, message)
        consent = await self.sessions.consent(session)
        if consent is not None and consent.reconnect_id is not None:
            return await self._reconnected(request, session, consent)
        raise web.HTTPFound("/ui/instances/new")

    def _same_site_again(self, request: web.Request) -> web.StreamResponse:
        """A SameSite=Strict cookie is not sent on the redirect from Intuit's (another site's)
        consent page: this page reloads the same URL from our own origin (a meta refresh, no
        script), and that request carries it. Still no session then: sign in."""
        if request.query.get("again"):
            raise web.HTTPFound("/ui/signin")
        again = f"{request.path}?{urlencode({**request.query, 'again': '1'})}"
        return self.render("again.html", request, {"again": again})

    async def _reconnected(
        self, request: web.Request, session: Session, consent: Consent
    ) -> web.StreamResponse:
        instance_id = consent.reconnect_id
        assert instance_id is not None  # checked by the caller
        await self.sessions.clear_consent(session)
        patch = {
            "providerData": {"code": consent.code, "realmId": consent.realm_id},
            "configuration": {"oauth.callback.url": self.redirect_uri},
        }
        await self.instances.update(session.caller, instance_id, patch)
        raise web.HTTPFound(f"/ui/instances/{instance_id}?done=reconnected")

    async def create(self, request: web.Request) -> web.StreamResponse:
        session = self.session(request)
        form = InstanceForm.from_post(await request.post())
        consent = await self.sessions.consent(session)
        if consent is None or consent.purpose != PURPOSE_NEW or consent.code is None:
            form.errors["connect"] = "Connect to QuickBooks first."
            return self._form(request, form, None, status=400)
        body = form.create_body(consent.code, consent.realm_id or "", self.redirect_uri)
        try:
            view = await self.instances.create(session.caller, body)
        except ManageError as exc:
            form.refuse(str(exc))
            if "providerData" in str(exc) or "code exchange" in str(exc):
                # The code is spent (or refused): a new consent is needed.
                await self.sessions.clear_consent(session)
                consent = None
            return self._form(request, form, consent, status=exc.status)
        await self.sessions.clear_consent(session)
        raise web.HTTPFound(f"/ui/instances/{view['id']}?done=created")

    async def edit_page(self, request: web.Request) -> web.Response:
        view = await self.instances.get(self.session(request).caller, _id(request))
        return self._form(request, InstanceForm.from_instance(view), None, view)

    async def edit(self, request: web.Request) -> web.StreamResponse:
        caller = self.session(request).caller
        instance_id = _id(request)
        view = await self.instances.get(caller, instance_id)
        form = InstanceForm.from_post(await request.post())
        try:
            await self.instances.update(caller, instance_id, form.patch())
        except ManageError as exc:
            form.refuse(str(exc))
            return self._form(request, form, None, view, status=exc.status)
        raise web.HTTPFound(f"/ui/instances/{instance_id}?done=updated")

    async def pause(self, request: web.Request) -> web.StreamResponse:
        instance_id = _id(request)
        await self.instances.set_enabled(self.session(request).caller, instance_id, False)
        raise web.HTTPFound(f"/ui/instances/{instance_id}?done=paused")

    async def resume(self, request: web.Request) -> web.StreamResponse:
        instance_id = _id(request)
        await self.instances.set_enabled(self.session(request).caller, instance_id, True)
        raise web.HTTPFound(f"/ui/instances/{instance_id}?done=resumed")

    async def poll_now(self, request: web.Request) -> web.StreamResponse:
        instance_id = _id(request)
        await self.overview.poll_now(self.session(request).caller, instance_id)
        raise web.HTTPFound(f"/ui/instances/{instance_id}?done=polled")

    async def delete_page(self, request: web.Request) -> web.Response:
        view = await self.instances.get(self.session(request).caller, _id(request))
        return self.render("delete.html", request, {"inst": view})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        instance_id = _id(request)
        caller = self.session(request).caller
        view = await self.instances.get(caller, instance_id)
        if posted.get("confirm_name") != view["name"]:
            context = {"inst": view, "error": "Type the instance's name to delete it."}
            return self.render("delete.html", request, context, status=400)
        await self.instances.delete(caller, instance_id)
        raise web.HTTPFound("/ui/instances?done=deleted")

    # --- events -------------------------------------------------------------------------

    def _filters(self, request: web.Request) -> dict[str, str]:
        query = request.query
        wanted = {
            "eventType": query.get("eventType", "").strip(),
            "objectType": query.get("objectType", "").strip(),
            "objectId": query.get("objectId", "").strip(),
        }
        return {key: value for key, value in wanted.items() if value}

    async def _records(self, request: web.Request) -> tuple[list[dict[str, Any]], str | None]:
        return await self.events.search(
            self.session(request).caller,
            _id(request),
            self._filters(request),
            EVENTS_PAGE,
            request.query.get("nextPage"),
        )

    async def events_page(self, request: web.Request) -> web.Response:
        caller = self.session(request).caller
        view = await self.instances.get(caller, _id(request))
        filters = self._filters(request)
        records, next_page = await self._records(request)
        first_page = not request.query.get("nextPage")
        context = {
            "inst": view,
            "records": records,
            "filters": filters,
            "next_page": next_page,
            "filter_query": urlencode(filters),
            "live": first_page,
            "choices": RESOURCE_CHOICES,
        }
        return self.render("events.html", request, context)

    async def event_rows(self, request: web.Request) -> web.Response:
        """The log's first page as table rows, fetched by console.js every few seconds."""
        records, _ = await self._records(request)
        return self.render(
            "event_rows.html", request, {"records": records, "inst_id": _id(request)}
        )

    async def event_page(self, request: web.Request) -> web.Response:
        caller = self.session(request).caller
        instance_id = _id(request)
        view = await self.instances.get(caller, instance_id)
        record = await self.events.get(caller, request.match_info["event"], instance_id)
        payload = orjson.loads(record["providerData"])
        pretty = orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode()
        changes = [_change_rows(event) for event in record["events"]]
        context = {"inst": view, "record": record, "payload": pretty, "changes": changes}
        return self.render("event.html", request, context)

    async def redeliver(self, request: web.Request) -> web.StreamResponse:
        instance_id = _id(request)
        event_id = request.match_info["event"]
        await self.events.redeliver(self.session(request).caller, instance_id, event_id)
        raise web.HTTPFound(f"/ui/instances/{instance_id}/events/{event_id}?done=redelivered")

    # --- deliveries ---------------------------------------------------------------------

    async def deliveries_page(self, request: web.Request) -> web.Response:
        caller = self.session(request).caller
        deliveries = await self.events.queued(caller, DELIVERIES_WHERE)
        return self.render("deliveries.html", request, {"deliveries": deliveries})

    async def redeliver_deliveries(self, request: web.Request) -> web.StreamResponse:
        """The checked deliveries, or every queued one ("Redeliver all")."""
        caller = self.session(request).caller
        posted = await request.post()
        if posted.get("all") == "1":
            await self.events.redeliver_queued(caller, DELIVERIES_WHERE)
            raise web.HTTPFound("/ui/deliveries?done=redelivered")
        for value in posted.getall("delivery", []):
            instance_text, _, event_id = str(value).partition("/")
            if not instance_text.isdigit():
                raise InvalidRequest("delivery: expected <instance id>/<event id>")
            await self.events.redeliver(caller, int(instance_text), event_id)
        raise web.HTTPFound("/ui/deliveries?done=redelivered")


def _change_rows(event: dict[str, Any]) -> list[dict[str, str | None]] | str | None:
    """An event's field changes as the page shows them (DESIGN §12): rows of path, old and new
    (values as JSON text, QBO's literals as written; None: absent), "unknown" for
    `"changes": null`, None when the event has no `changes`."""
    if "changes" not in event:
        return None
    if event["changes"] is None:
        return "unknown"
    return [
        {
            "path": change["path"],
            "old": _json_text(change["old"]) if "old" in change else None,
            "new": _json_text(change["new"]) if "new" in change else None,
        }
        for change in event["changes"]
    ]


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()
