"""`GET /metrics`: the process registry (`poller.metrics.REGISTRY`) in the Prometheus text format.

Rendering is synchronous and cheap (a few dozen series per instance); it runs on the event loop.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from poller.metrics import REGISTRY

REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app.get(REGISTRY_KEY, REGISTRY)
    response = web.Response(body=generate_latest(registry))
    # CONTENT_TYPE_LATEST carries parameters (version, charset); set the header verbatim.
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


class Metrics:
    """The `/metrics` route, over `registry` (default: the process registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry

    def add_routes(self, app: web.Application) -> None:
        if self.registry is not None:
            app[REGISTRY_KEY] = self.registry
        app.router.add_get("/metrics", metrics)
