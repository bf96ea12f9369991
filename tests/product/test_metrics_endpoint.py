"""`GET /metrics` on the supervisor's own app and listener, with a real pool."""

from __future__ import annotations

import aiohttp
import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from poller import metrics
from poller.config import HttpAddr
from poller.web.app import build_app, serve
from poller.web.health import Health
from poller.web.prometheus import Metrics


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_endpoint_serves_the_process_registry(pool: asyncpg.Pool) -> None:
    # The registry is process-wide: compare against what it held before this test.
    polls_ok = _sample("qbo_poller_polls_total", outcome="ok")
    created = _sample("qbo_poller_events_total", type="CREATED")
    latency_count = _sample("qbo_poller_delivery_latency_seconds_count")
    depth = _sample("qbo_poller_outbox_depth")

    metrics.POLLS.labels(outcome="ok").inc(3)
    metrics.EVENTS.labels(type="CREATED").inc()
    metrics.DELIVERY_LATENCY.observe(0.2)
    metrics.OUTBOX_DEPTH.set(7)
    metrics.INSTANCE_WATERMARK_LAG.labels(instance="metrics-test", resource="customers").set(42.5)
    lag_count = _sample("qbo_poller_watermark_lag_seconds_count", resource="customers")
    metrics.WATERMARK_LAG.labels(resource="customers").observe(3.0)
    try:
        async with (
            serve(build_app([Health(pool), Metrics()]), HttpAddr("127.0.0.1", 0)) as port,
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await resp.text()
    finally:
        metrics.forget_instance("metrics-test", ["customers"])
        metrics.OUTBOX_DEPTH.set(depth)

    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in [
        ("qbo_poller_polls", "counter"),
        ("qbo_poller_qbo_requests", "counter"),
        ("qbo_poller_events", "counter"),
        ("qbo_poller_deliveries", "counter"),
        ("qbo_poller_delivery_latency_seconds", "histogram"),
        ("qbo_poller_outbox_depth", "gauge"),
        ("qbo_poller_dead_letters", "gauge"),
        ("qbo_poller_watermark_lag_seconds", "histogram"),
        ("qbo_poller_instance_watermark_lag_seconds", "gauge"),
        ("qbo_poller_event_loop_lag_seconds", "histogram"),
        ("qbo_poller_event_loop_lag_max_seconds", "gauge"),
        ("qbo_poller_gc_seconds", "counter"),
    ]:
        assert families[name].type == kind, name

    def value(family: str, sample: str, **labels: str) -> float:
        found = [
            s.value for s in families[family].samples if s.name == sample and s.labels == labels
        ]
        assert len(found) == 1, (sample, labels, families[family].samples)
        return found[0]

    assert value("qbo_poller_polls", "qbo_poller_polls_total", outcome="ok") == polls_ok + 3
    assert value("qbo_poller_events", "qbo_poller_events_total", type="CREATED") == created + 1
    assert (
        value("qbo_poller_delivery_latency_seconds", "qbo_poller_delivery_latency_seconds_count")
        == latency_count + 1
    )
    assert value("qbo_poller_outbox_depth", "qbo_poller_outbox_depth") == 7
    assert (
        value(
            "qbo_poller_instance_watermark_lag_seconds",
            "qbo_poller_instance_watermark_lag_seconds",
            instance="metrics-test",
            resource="customers",
        )
        == 42.5
    )
    assert (
        value(
            "qbo_poller_watermark_lag_seconds",
            "qbo_poller_watermark_lag_seconds_count",
            resource="customers",
        )
        == lag_count + 1
    )
    # Nothing from prometheus_client's global default registry (process/platform collectors).
    assert not any(name.startswith(("python_", "process_")) for name in families)


async def test_health_routes_still_served_beside_metrics(pool: asyncpg.Pool) -> None:
    async with (
        serve(build_app([Health(pool), Metrics()]), HttpAddr("127.0.0.1", 0)) as port,
        aiohttp.ClientSession() as client,
    ):
        for path in ("/healthz", "/readyz", "/metrics"):
            async with client.get(f"http://127.0.0.1:{port}{path}") as resp:
                assert resp.status == 200, path
