"""Fidelity: drive the emulator with an independent, published QBO client.

``python-quickbooks`` (+ Intuit's own ``intuitlib`` for OAuth) is synchronous,
so it runs in a worker thread while the emulator serves on the test's loop.
Its only adaptation is configuration any user of it would do: the discovery
URL passed as ``environment`` (intuitlib accepts a URL there) and the API base
URL attributes of the client.  Nothing on the emulator side is patched.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from intuitlib.client import AuthClient
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import QuickbooksException, ValidationException
from quickbooks.objects.base import Ref
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.payment import Payment
from quickbooks.objects.taxcode import TaxCode

from qbo_emulator import Emulator

from .conftest import present

pytestmark = pytest.mark.published_client

REDIRECT = "https://app.example/callback"


def connect(emu: Emulator, realm: str, code: str) -> tuple[AuthClient, QuickBooks]:
    auth = AuthClient(emu.client_id, emu.client_secret, REDIRECT, emu.discovery_url)
    auth.get_bearer_token(code, realm_id=realm)
    qb = QuickBooks(
        auth_client=auth, refresh_token=auth.refresh_token, company_id=realm, minorversion=75
    )
    qb.api_url_v3 = qb.sandbox_api_url_v3 = f"{emu.base_url}/v3"
    return auth, qb


def scenario(emu: Emulator, realm: str, code: str, seeded: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    auth, qb = connect(emu, realm, code)
    out["token"] = (auth.expires_in, auth.x_refresh_token_expires_in)
    first_refresh = auth.refresh_token
    auth.refresh()
    out["rotated"] = auth.refresh_token != first_refresh
    try:
        auth.refresh(refresh_token=first_refresh)
        out["stale_refresh"] = "accepted"
    except AuthClientError as err:
        out["stale_refresh"] = (err.status_code, err.content)
    qb.session.token = {"access_token": auth.access_token, "refresh_token": auth.refresh_token}

    # queries: all / filter / where / count / choose
    out["all"] = [c.Id for c in Customer.all(qb=qb, max_results=1000)]
    out["count"] = Customer.count(qb=qb)
    out["filter"] = [c.DisplayName for c in Customer.filter(DisplayName=seeded["name"], qb=qb)]
    out["where"] = [
        c.Id for c in Customer.where("Active = true", order_by="Id DESC", max_results=3, qb=qb)
    ]
    out["choose"] = sorted(c.Id for c in Customer.choose(["1", "2"], qb=qb))
    out["taxcodes"] = len(TaxCode.all(qb=qb))

    # create / read / update (sparse and full) / stale update
    customer = Customer()
    customer.DisplayName = "Amy's Bird Sanctuary"
    customer.GivenName = "Amy"
    customer = customer.save(qb=qb)
    out["created"] = (customer.Id, customer.SyncToken, customer.FullyQualifiedName)
    out["filter_quote"] = [c.Id for c in Customer.filter(DisplayName="Amy's Bird Sanctuary", qb=qb)]
    customer.CompanyName = "Amy's Birds"
    updated = customer.save(qb=qb)
    read_back = Customer.get(customer.Id, qb=qb)
    out["updated"] = (updated.SyncToken, read_back.SyncToken, read_back.CompanyName)
    customer.SyncToken = "0"
    try:
        customer.save(qb=qb)
        out["stale"] = None
    except QuickbooksException as err:
        out["stale"] = err.error_code

    # an invoice: create, void, delete; then CDC sees the tombstone
    invoice = Invoice()
    line = SalesItemLine()
    line.Amount = 150
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = Ref()
    line.SalesItemLineDetail.ItemRef.value = "1"
    invoice.Line = [line]
    invoice.CustomerRef = read_back.to_ref()
    invoice = invoice.save(qb=qb)
    out["invoice"] = (
        invoice.TotalAmt,
        invoice.Balance,
        invoice.DocNumber is not None,
        len(invoice.Line),
    )
    voided = invoice.void(qb=qb)["Invoice"]
    out["voided"] = (voided["TotalAmt"], voided["PrivateNote"], voided["SyncToken"])
    fresh = Invoice.get(invoice.Id, qb=qb)
    out["deleted"] = fresh.delete(qb=qb)["Invoice"]
    payment = Payment.get("1", qb=qb)
    out["payment_void"] = payment.void(qb=qb)["Payment"]["TotalAmt"]
    try:
        Invoice.get(invoice.Id, qb=qb)
        out["read_deleted"] = None
    except QuickbooksException as err:
        out["read_deleted"] = err.error_code
    try:
        Customer.where("Id > '3'", qb=qb)
        out["bad_query"] = None
    except ValidationException as err:
        out["bad_query"] = err.error_code

    cdc = change_data_capture([Customer, Invoice], seeded["since"], qb=qb)
    out["cdc_customers"] = [c.Id for c in cdc.Customer]
    out["cdc_invoices"] = [(i.Id, getattr(i, "status", None)) for i in cdc.Invoice]
    return out


@pytest.fixture(autouse=True)
def _http_is_fine_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests-oauthlib refuses plain http unless told otherwise (client-side setting).
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


async def test_python_quickbooks_round_trip(emu: Emulator) -> None:
    realm = emu.add_realm("4620816365000000001", seed=11, per_entity=12)
    emu.clock.freeze()
    since = emu.clock.now().replace(microsecond=0).isoformat()
    emu.clock.advance(1)
    seeded = {"name": present(emu.get(realm, "Customer", "3"))["DisplayName"], "since": since}
    code = emu.issue_auth_code(realm, emu.client_id, REDIRECT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out = await asyncio.to_thread(scenario, emu, realm, code, seeded)

    assert out["token"] == (3600, 8726400) and out["rotated"] is True
    assert out["stale_refresh"][0] == 400 and b"invalid_grant" in out["stale_refresh"][1]
    assert out["all"] == [str(i) for i in range(1, 13)] and out["count"] == 12
    assert out["filter"] == [seeded["name"]]
    assert (
        out["where"] == ["12", "11", "10"] and out["choose"] == ["1", "2"] and out["taxcodes"] == 12
    )
    new_id, token, fqn = out["created"]
    assert (new_id, token, fqn) == ("13", "0", "Amy's Bird Sanctuary")
    assert out["filter_quote"] == ["13"]
    assert out["updated"] == ("1", "1", "Amy's Birds")
    assert out["stale"] == 5010
    assert out["invoice"] == (150.0, 150.0, True, 2)
    assert out["voided"] == (0, "Voided", "1")
    assert out["deleted"]["status"] == "Deleted"
    assert out["payment_void"] == 0
    assert out["read_deleted"] == 610
    assert out["bad_query"] == 4001
    assert out["cdc_customers"] == ["13"]
    assert out["cdc_invoices"] == [(str(13), "Deleted")]
