"""The console (DESIGN §10): Open Connectors' UI flow at /ui/, server-rendered.

A sub-application with its own middleware: security headers on every answer (a strict
Content-Security-Policy: scripts, styles and images from this origin only, no inline script),
the session (a cookie holding a random id; PostgreSQL holds its hash), and the CSRF check of
every POST. Everything it does goes through poller.manage, as the API's handlers do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources as package_files
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from poller import logs
from poller.config import Settings
from poller.errors import DatabaseError
from poller.manage.errors import ManageError
from poller.manage.events import EventManager
from poller.manage.instances import InstanceManager
from poller.manage.overview import Overview
from poller.manage.sessions import SessionManager, csrf_ok
from poller.store import db
from poller.store.crypto import SecretBox
from poller.web.api.auth import Authenticator
from poller.web.console.views import (
    PUBLIC_PATHS,
    SESSION_KEY,
    Console,
    cookie_names,
    signin_csrf_ok,
)

log = logs.get_logger(__name__)
BASE_PATH = "/ui"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def content_security_policy(settings: Settings) -> str:
    """No inline script or style, nothing from another origin; forms post here, and the one
    cross-origin navigation a form starts is the redirect to Intuit's consent page."""
    authorize = urlsplit(settings.qbo_oauth_authorize_url)
    consent_origin = f"{authorize.scheme}://{authorize.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'; form-action 'self' {consent_origin}; frame-ancestors 'none'; "
        "base-uri 'none'"
    )


class ConsolePart:
    """The console's routes; built by the supervisor next to the API (same switch, same
    managers, the same failed-sign-in throttle)."""

    def __init__(
        self,
        pool: db.Pool,
        box: SecretBox,
        settings: Settings,
        instances: InstanceManager,
        events: EventManager,
        authenticator: Authenticator,
    ) -> None:
        self.settings = settings
        self.console = Console(
            settings,
            instances,
            events,
            Overview(pool),
            SessionManager(pool, box),
            authenticator,
        )
        self.policy = content_security_policy(settings)

    def add_routes(self, app: web.Application) -> None:
        ui = web.Application(middlewares=[self._headers, self._session])
        templates = package_files.files("poller.web.console") / "templates"
        aiohttp_jinja2.setup(
            ui,
            loader=jinja2.FileSystemLoader(str(templates)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            # A listing shows URLs as the logs do (no credentials, no query); the edit form
            # alone shows the owner's URL in full, to edit it.
            filters={"redact_url": lambda url: logs.redact_url(url) if url else url},
        )
        self.console.add_routes(ui)
        static = package_files.files("poller.web.console") / "static"
        ui.router.add_static("/static", Path(str(static)), append_version=False)
        app.router.add_get(BASE_PATH, _to_console)
        app.add_subapp(BASE_PATH, ui)

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._protect(request, exc.headers)
            raise
        except ManageError as exc:
            response = self.console.error_page(request, exc.status, str(exc))
        except DatabaseError as exc:
            log.warning("console_database_error", path=request.path, error=type(exc).__name__)
            response = self.console.error_page(
                request, 503, "The database is unavailable; try again in a moment."
            )
        self._protect(request, response.headers)
        return response

    def _protect(self, request: web.Request, headers: MutableMapping[str, str]) -> None:
        headers["Content-Security-Policy"] = self.policy
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        # The OAuth callback's URL carries a code: no Referer may take it elsewhere.
        headers["Referrer-Policy"] = "no-referrer"
        if not request.path.startswith(f"{BASE_PATH}/static/"):
            headers["Cache-Control"] = "no-store"

    @web.middleware
    async def _session(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every page but sign-in and the assets needs a live session; every POST a CSRF
        token (the session's, or on the sign-in form the pre-session cookie's)."""
        names = cookie_names(self.settings)
        relative = request.path.removeprefix(BASE_PATH) or "/"
        session = await self.console.sessions.find(request.cookies.get(names.session))
        if session is not None:
            request[SESSION_KEY] = session
        if request.method == "POST":
            posted = await request.post()
            token = posted.get("csrf")
            offered = token if isinstance(token, str) else None
            if session is not None and relative != "/signin":
                if not csrf_ok(session.session_id, offered):
                    return self.console.error_page(
                        request, 403, "The form is missing its security token; reload the page."
                    )
            elif not signin_csrf_ok(request, names, offered):
                return self.console.error_page(
                    request, 403, "The form is missing its security token; reload the page."
                )
        if session is None and not relative.startswith(PUBLIC_PATHS):
            if relative.endswith("/rows"):
                raise web.HTTPUnauthorized(text="signed out")
            raise web.HTTPFound(f"{BASE_PATH}/signin")
        return await handler(request)


async def _to_console(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"{BASE_PATH}/")
