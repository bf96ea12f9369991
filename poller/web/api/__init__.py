"""The Open Connectors HTTP API (DESIGN §9) as a WebPart under /elements/api-v2.

A sub-application with its own middleware (request ids and the error body), so health,
metrics and the other parts keep their own conventions. With POLLER_API_ORGANIZATION_SECRET
unset every API path answers 404 naming the variable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from poller.config import Settings
from poller.manage.events import EventManager
from poller.manage.instances import CodeExchanger, InstanceManager
from poller.store import db
from poller.store.crypto import SecretBox
from poller.web.api import openapi
from poller.web.api.auth import Authenticator, Throttle
from poller.web.api.conventions import ApiError, conventions_middleware
from poller.web.api.routes import BASE_PATH, ROUTES, ApiHandlers, Route

OFF_MESSAGE = (
    "the HTTP API is off: set POLLER_API_ORGANIZATION_SECRET (at least 16 characters) and "
    "add users with `qbo-poller users add NAME`"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiPart:
    """The API's routes; built by the supervisor with the pool, the SecretBox, the settings
    and the OAuth code exchanger."""

    def __init__(
        self, pool: db.Pool, box: SecretBox, settings: Settings, exchange: CodeExchanger
    ) -> None:
        self.settings = settings
        self.manager = InstanceManager(pool, box, settings, exchange)
        self.events = EventManager(pool)
        self.throttle = Throttle()
        self.authenticator = (
            Authenticator(pool, settings.api_organization_secret, self.manager, self.throttle)
            if settings.api_organization_secret
            else None
        )

    def add_routes(self, app: web.Application) -> None:
        api = web.Application(middlewares=[conventions_middleware])
        if self.authenticator is None:
            api.router.add_route("*", "/{tail:.*}", _api_off)
        else:
            document = openapi.document()
            handlers = ApiHandlers(
                self.manager, self.events, self.settings, document, openapi.page(document)
            )
            for route in ROUTES:
                api.router.add_route(route.method, route.router_path, self._wrap(route, handlers))
        app.add_subapp(BASE_PATH, api)

    def _wrap(self, route: Route, handlers: ApiHandlers) -> Handler:
        handler: Handler = getattr(handlers, route.handler)
        authenticator = self.authenticator
        if route.public or authenticator is None:
            return handler

        async def authenticated(request: web.Request) -> web.StreamResponse:
            await authenticator.authenticate(request)
            return await handler(request)

        return authenticated


async def _api_off(_request: web.Request) -> web.StreamResponse:
    raise ApiError(404, OFF_MESSAGE)
