"""Issue 10, finding 5: one QBO answer with a future `time` must not move watermarks past the
changes that follow it.

The emulator's clock drives QBO's `time` and the objects' MetaData: it is moved an hour ahead
for one cycle's answer and back, then changes are made; each must be reported.
"""

from __future__ import annotations

from structlog.testing import capture_logs

from poller import metrics
from tests.detect.harness import Env, add_instance, cursor_row, events
from tests.detect.test_rules_emulator import INVOICE

JUMP_H = 1


def jumps_counted() -> float:
    return metrics.REGISTRY.get_sample_value("qbo_poller_qbo_clock_jumps_total") or 0.0


def lag_seconds() -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "qbo_poller_instance_watermark_lag_seconds", {"instance": "inst", "resource": "customers"}
    )


def lags_at_or_below_zero() -> float:
    return (
        metrics.REGISTRY.get_sample_value(
            "qbo_poller_watermark_lag_seconds_bucket", {"resource": "customers", "le": "0.0"}
        )
        or 0.0
    )


async def test_one_answer_an_hour_ahead_skips_nothing_and_is_reported(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=31, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["customers", "invoices"])
    async with env.driver(iid, env.settings(metrics_per_instance=True)) as d:
        await d.cycle()  # the baseline
        await d.cycle()
        counted = jumps_counted()
        at_or_below_zero = lags_at_or_below_zero()
        emu.clock.advance(hours=JUMP_H)  # QBO's clock an hour ahead, for one answer
        with capture_logs() as logged:
            await d.cycle()
        emu.clock.advance(hours=-JUMP_H)
        lag_after_jump = lag_seconds()
        watermark = (await cursor_row(env.pool, iid, "customers"))["watermark"]
        made = []
        for n in range(4):
            made.append(("customers", emu.create(realm, "Customer", {"DisplayName": f"C{n}"})))
            made.append(("invoices", emu.create(realm, "Invoice", INVOICE)))
            await d.cycle()
        await d.cycle()
    got = {(e.resource, e.object_id) for e in await events(env.pool, iid)}
    assert got == {(res, obj["Id"]) for res, obj in made}  # nothing skipped
    # The watermark stayed with the evidence (our clock, the objects), not an hour ahead.
    assert (watermark - emu.clock.now()).total_seconds() < 60
    warned = [entry for entry in logged if entry["event"] == "qbo_clock_jump"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert warned[0]["ahead_s"] > 3000
    assert jumps_counted() == counted + 1
    # The watermark is (a tolerance) ahead of the QBO clock we trust: a negative lag, shown.
    assert lag_after_jump is not None and lag_after_jump < 0
    assert lags_at_or_below_zero() > at_or_below_zero  # and in the histogram
