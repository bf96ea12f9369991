"""End to end: a change in the emulator arrives as a signed callback at a loopback receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
from standardwebhooks.webhooks import Webhook

from poller.demo.receiver import Receiver, run_receiver
from qbo_emulator import run_emulator
from tests.e2e.pipeline import events_of, instance_for, running_daemon, settings_for, wait_for

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def test_changes_arrive_signed_with_both_schemes(db_dsn: str) -> None:
    receiver = Receiver()
    async with run_emulator(per_second=None) as emu, run_receiver(receiver) as url:
        realm = emu.add_realm("4620816365100001", seed=3, per_entity=3)
        # Existing data with an amount QuickBooks writes as 12.50 (a float prints 12.5), so the
        # byte-exact check below shows that number literals pass through unchanged.
        line = {"Amount": 12.5, "DetailType": "SalesItemLineDetail"}
        line["SalesItemLineDetail"] = {"ItemRef": {"value": "1"}}
        priced = emu.create(realm, "Invoice", {"CustomerRef": {"value": "1"}, "Line": [line]})
        edited_id = priced["Id"]
        inst = instance_for(emu, realm, url, key=WHSEC)
        async with running_daemon(settings_for(db_dsn, emu), [inst]):
            # Wait until the first poll recorded its baseline (nothing existing is emitted).
            await wait_for(lambda: emu.counters(realm).get("token", 0) >= 1, what="token exchange")
            await wait_for(
                lambda: (
                    sum(v for k, v in emu.counters(realm).items() if k in ("batch", "cdc")) >= 2
                ),
                what="first polls",
            )
            customer = emu.create(realm, "Customer", {"DisplayName": "Ada Lovelace"})
            emu.update(realm, "Customer", {"Id": customer["Id"], "Notes": "VIP"})
            invoice_id = emu.ids(realm, "Invoice")[0]
            emu.delete(realm, "Invoice", invoice_id)
            emu.update(realm, "Invoice", {"Id": edited_id, "PrivateNote": "edited"})
            await wait_for(
                lambda: (
                    {
                        ("CREATED", "customers", customer["Id"]),
                        ("DELETED", "invoices", invoice_id),
                        ("UPDATED", "invoices", edited_id),
                    }
                    <= set(events_of(receiver))
                ),
                what="callbacks",
            )
    assert receiver.notifications
    for received in receiver.notifications.values():
        # Elements scheme by hand: sha256= base64(HMAC-SHA256(key bytes, raw body)).
        expected = base64.b64encode(
            hmac.new(WHSEC.encode(), received.body, hashlib.sha256).digest()
        )
        assert received.headers["Elements-Webhook-Signature"] == "sha256=" + expected.decode()
        # Standard Webhooks with the published verifier.
        verified = Webhook(WHSEC).verify(received.body, received.headers)
        assert verified["message"]["eventId"] == received.headers["webhook-id"]
        assert received.headers["Elements-Webhook-Id"] == received.event_id
        message = orjson.loads(received.body)["message"]
        assert message["elementKey"] == "quickbooks" and message["instanceName"] == "E2E"
        assert message["instanceId"] == message["instance_id"] and message["realmId"] == realm
        raw = message["raw"]
        assert raw["objectType"] == message["events"][0]["objectType"]
        assert len(raw[raw["objectType"]]) == len(message["events"])
    created = next(
        notification
        for notification in receiver.notifications.values()
        if any(
            e["eventType"] == "CREATED" and e["objectId"] == customer["Id"]
            for e in notification.events
        )
    )
    record = created.message["raw"]["customers"][0]
    assert record["Id"] == customer["Id"] and record["DisplayName"] == "Ada Lovelace"
    deleted = next(
        notification
        for notification in receiver.notifications.values()
        if any(e["eventType"] == "DELETED" for e in notification.events)
    )
    tombstone = deleted.message["raw"]["invoices"][0]
    assert tombstone["status"] == "Deleted" and tombstone["Id"] == invoice_id
    # The object is passed through exactly as QuickBooks wrote it: same keys, same order, and
    # the same number literals (amounts keep their two decimals: 12.50, not 12.5).
    stored = emu.realm(realm).get("Invoice", edited_id)
    assert stored is not None
    wire = stored.json()  # the bytes the emulator serves in CDC and query answers
    assert b'"Amount":12.50,' in wire
    assert b".00" in wire or b"0," in wire
    assert any(wire in r.body for r in receiver.notifications.values())
    assert receiver.duplicates == 0


async def test_existing_data_is_not_emitted_on_first_start(db_dsn: str) -> None:
    receiver = Receiver()
    async with run_emulator(per_second=None) as emu, run_receiver(receiver) as url:
        realm = emu.add_realm("4620816365100002", seed=4, per_entity=20)
        inst = instance_for(emu, realm, url, key=None)
        async with running_daemon(settings_for(db_dsn, emu), [inst]):
            await wait_for(
                lambda: (
                    sum(v for k, v in emu.counters(realm).items() if k in ("batch", "cdc")) >= 4
                ),
                what="several polls",
            )
            emu.create(realm, "Vendor", {"DisplayName": "Only this one"})
            await wait_for(lambda: len(receiver.events()) >= 1, what="the new vendor")
            await wait_for(
                lambda: (
                    sum(v for k, v in emu.counters(realm).items() if k in ("batch", "cdc")) >= 8
                ),
                what="more polls",
            )
    assert [(t, o) for t, o, _ in events_of(receiver)] == [("CREATED", "vendors")]
    received = next(iter(receiver.notifications.values()))
    assert "Elements-Webhook-Signature" not in received.headers  # no key: unsigned
