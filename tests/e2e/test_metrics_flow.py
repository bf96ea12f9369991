"""/metrics, parsed with prometheus-client's own parser, moves after a poll and a delivery."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from poller.demo.receiver import Receiver, run_receiver
from qbo_emulator import run_emulator
from tests.e2e.daemon import free_port
from tests.e2e.pipeline import instance_for, running_daemon, settings_for, wait_for


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, val) in ls for k, val in labels.items())
    )


async def test_metrics_move_after_a_poll_and_a_delivery(db_dsn: str) -> None:
    receiver = Receiver()
    port = free_port()
    async with run_emulator(per_second=None) as emu, run_receiver(receiver) as url:
        realm = emu.add_realm("4620816365100009", seed=9, per_entity=2)
        inst = instance_for(emu, realm, url, name="Metrics")
        settings = settings_for(db_dsn, emu, POLLER_HTTP_ADDR=f"127.0.0.1:{port}")
        async with running_daemon(settings, [inst]):
            await wait_for(
                lambda: (
                    sum(v for k, v in emu.counters(realm).items() if k in ("batch", "cdc")) >= 2
                ),
                what="first polls",
            )
            before = await scrape(port)
            emu.create(realm, "Customer", {"DisplayName": "Metered"})
            await wait_for(lambda: len(receiver.events()) >= 1, what="a delivery")
            await wait_for(
                lambda: (
                    sum(v for k, v in emu.counters(realm).items() if k in ("batch", "cdc")) >= 4
                ),
                what="more polls",
            )
            after = await scrape(port)
    assert total(after, "qbo_poller_polls_total", outcome="ok") > total(
        before, "qbo_poller_polls_total", outcome="ok"
    )
    assert total(after, "qbo_poller_qbo_requests_total") > total(
        before, "qbo_poller_qbo_requests_total"
    )
    assert total(after, "qbo_poller_qbo_requests_total", status="200") > 0
    assert (
        total(after, "qbo_poller_events_total", type="CREATED")
        >= total(before, "qbo_poller_events_total", type="CREATED") + 1
    )
    assert (
        total(after, "qbo_poller_deliveries_total", outcome="delivered")
        >= total(before, "qbo_poller_deliveries_total", outcome="delivered") + 1
    )
    assert (
        total(after, "qbo_poller_delivery_latency_seconds_count")
        >= total(before, "qbo_poller_delivery_latency_seconds_count") + 1
    )
    # The watermark lag is a histogram by resource; no series names an instance by default
    # (POLLER_METRICS_PER_INSTANCE), so a scrape's size does not grow with the instances.
    assert total(after, "qbo_poller_watermark_lag_seconds_count", resource="customers") > total(
        before, "qbo_poller_watermark_lag_seconds_count", resource="customers"
    )
    assert not [key for key in after if "instance" in dict(key[1])]
    # The runtime's own: the event-loop lag probe and the collector's time.
    assert total(after, "qbo_poller_event_loop_lag_seconds_count") > 0
    assert any(n == "qbo_poller_event_loop_lag_max_seconds" for n, _ in after)
    assert any(n == "qbo_poller_outbox_depth" for n, _ in after)
    assert any(n == "qbo_poller_dead_letters" for n, _ in after)
    assert any(n == "qbo_poller_held_notifications" for n, _ in after)
    assert any(n == "qbo_poller_qbo_throttles_total" for n, _ in after)
