"""Prometheus metrics (prometheus-client), one registry for the process.

Cardinality is bounded by configuration, not by the number of instances: labels are endpoint
names, HTTP status classes, event types, outcomes, GC generations and resource names (fixed
sets). The one per-instance family, `qbo_poller_instance_watermark_lag_seconds` (22 series per
instance), is exported only with `POLLER_METRICS_PER_INSTANCE=true`; the watermark lag of every
pair is always in the `qbo_poller_watermark_lag_seconds` histogram, by resource.
"""

from __future__ import annotations

import contextlib
import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

POLLS = Counter(
    "qbo_poller_polls",
    "Pair polls completed, by outcome (ok, error).",
    ["outcome"],
    registry=REGISTRY,
)
QBO_REQUESTS = Counter(
    "qbo_poller_qbo_requests",
    "Requests sent to QuickBooks, by endpoint (cdc, query, batch, token) and "
    "HTTP status (or 'error' for transport failures).",
    ["endpoint", "status"],
    registry=REGISTRY,
)
QBO_THROTTLES = Counter(
    "qbo_poller_qbo_throttles", "429 answers from QuickBooks.", registry=REGISTRY
)
TOKEN_REFRESHES = Counter(
    "qbo_poller_token_refreshes",
    "OAuth token refreshes, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "qbo_poller_events", "Events written to the outbox, by type.", ["type"], registry=REGISTRY
)
DELIVERIES = Counter(
    "qbo_poller_deliveries",
    "Delivery attempts, by outcome (delivered, retry, held, dead).",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "qbo_poller_delivery_latency_seconds",
    "From a notification's creation to its successful delivery.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 86400),
    registry=REGISTRY,
)
CALLBACK_PAUSES = Counter(
    "qbo_poller_callback_pauses",
    "Times a callback URL was paused by its breaker (timeouts in a row, or a probe timing out).",
    registry=REGISTRY,
)
PAUSED_CALLBACK_URLS = Gauge(
    "qbo_poller_paused_callback_urls",
    "Callback URLs paused by their breaker right now (as of the latest claim).",
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "qbo_poller_outbox_depth", "Notifications waiting for delivery.", registry=REGISTRY
)
HELD_NOTIFICATIONS = Gauge(
    "qbo_poller_held_notifications",
    "Notifications held because their callback URL answered 410 Gone.",
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "qbo_poller_dead_letters", "Notifications that exhausted their retries.", registry=REGISTRY
)
WATERMARK_LAG = Histogram(
    "qbo_poller_watermark_lag_seconds",
    "At each successful poll, QuickBooks' clock (as trusted) minus the pair's new watermark, by "
    "resource; at or below 0 when the watermark is ahead of it (within the clock tolerance).",
    ["resource"],
    buckets=(0, 1, 5, 15, 60, 300, 900, 3600, 21600, 86400),
    registry=REGISTRY,
)
INSTANCE_WATERMARK_LAG = Gauge(
    "qbo_poller_instance_watermark_lag_seconds",
    "The latest watermark lag of each pair (POLLER_METRICS_PER_INSTANCE=true only); negative "
    "when the watermark is ahead of QuickBooks' clock (within the clock tolerance).",
    ["instance", "resource"],
    registry=REGISTRY,
)
QBO_CLOCK_JUMPS = Counter(
    "qbo_poller_qbo_clock_jumps",
    "Answers whose QuickBooks `time` jumped past the tolerance from the clock the evidence "
    "shows (counted once per jump; watermarks are held at the evidence).",
    registry=REGISTRY,
)

WEBHOOK_NOTIFICATIONS = Counter(
    "qbo_poller_webhook_notifications",
    "Intuit webhook entity changes received, by format (legacy, cloudevents, unknown) and "
    "outcome (recorded, duplicate, unparseable: a whole body kept raw).",
    ["format", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "qbo_poller_webhook_signature_failures",
    "Webhook requests refused with 401: no intuit-signature, a wrong one, or no verifier "
    "token configured.",
    registry=REGISTRY,
)
WEBHOOK_DROPPED = Counter(
    "qbo_poller_webhook_dropped",
    "Recorded webhook entity changes that requested no poll, by reason (unknown_realm: no "
    "instance of that company; unwatched: no instance watches those entities).",
    ["reason"],
    registry=REGISTRY,
)
WEBHOOK_POLL_LATENCY = Histogram(
    "qbo_poller_webhook_poll_latency_seconds",
    "From a webhook notification's arrival to its pairs being made due (the poll request, "
    "after coalescing).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30),
    registry=REGISTRY,
)


@functools.cache
def watermark_lag(resource: str) -> Histogram:
    """WATERMARK_LAG's series of one resource: found once, not at every poll of every pair
    (`labels` takes a lock and builds a key; 22 pairs per cycle made it a hot spot)."""
    return WATERMARK_LAG.labels(resource)


@functools.cache
def qbo_requests(endpoint: str, status: str) -> Counter:
    """QBO_REQUESTS's series of one endpoint and status (see `watermark_lag`)."""
    return QBO_REQUESTS.labels(endpoint, status)


def forget_instance(name: str, resource_names: list[str]) -> None:
    """Drop an instance's series when it is removed, so the label set stays current."""
    for resource in resource_names:
        with contextlib.suppress(KeyError):  # never polled: no series
            INSTANCE_WATERMARK_LAG.remove(name, resource)


API_AUTH_FAILURES = Counter(
    "qbo_poller_api_auth_failures",
    "HTTP API calls refused for their Authorization header, by outcome (invalid: 401; "
    "throttled: 429 after repeated failures from one address).",
    ["outcome"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "qbo_poller_api_requests",
    "HTTP API responses, by HTTP status class (2xx, 4xx, 5xx).",
    ["status"],
    registry=REGISTRY,
)

EVENT_LOOP_LAG = Histogram(
    "qbo_poller_event_loop_lag_seconds",
    "How late an event loop woke a task sleeping a quarter of a second: the longest any task "
    "(a delivery, a poll, a health check) waited for its loop; by loop (main: detection, "
    "HTTP, upkeep; deliver: the dispatcher's own).",
    ["loop"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
EVENT_LOOP_LAG_MAX = Gauge(
    "qbo_poller_event_loop_lag_max_seconds",
    "The longest event-loop lag of the last one to two minutes, by loop.",
    ["loop"],
    registry=REGISTRY,
)
GC_SECONDS = Counter(
    "qbo_poller_gc_seconds",
    "Time spent in Python's cyclic garbage collector (the event loop stands still meanwhile), "
    "by generation (0, 1, 2).",
    ["generation"],
    registry=REGISTRY,
)
