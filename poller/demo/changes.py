"""Steady, realistic change traffic against the emulator (the demo and the pipeline bench).

Each tick picks a company and one of: create a customer, update a customer, deactivate a
customer, create an invoice, update an invoice, delete an invoice, create a vendor or an item.
A refused operation (QBO would have faulted) is counted and skipped.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from poller.aio import sleep_unless


class ChangeDriver:
    def __init__(self, emu: Any, realms: Sequence[str], rate: float, seed: int = 0) -> None:
        self.emu = emu
        self.realms = list(realms)
        self.rate = rate
        self.random = random.Random(seed)
        self.done: Counter[str] = Counter()
        self.refused = 0
        self.serial = 0

    async def run(self, stop: asyncio.Event) -> None:
        if self.rate <= 0:
            await stop.wait()
            return
        period = 1.0 / self.rate
        while not stop.is_set():
            self.step()
            await sleep_unless(stop, period)

    def step(self) -> str:
        realm = self.random.choice(self.realms)
        name, action = self.random.choices(
            self._actions(), weights=[w for w, _, _ in self._table()]
        )[0]
        try:
            action(realm)
        except Exception:
            self.refused += 1
            return "refused"
        self.done[name] += 1
        return name

    def _table(self) -> list[tuple[int, str, Callable[[str], None]]]:
        return [
            (3, "customer created", self._create_customer),
            (3, "customer updated", self._update_customer),
            (1, "customer deactivated", self._deactivate_customer),
            (3, "invoice created", self._create_invoice),
            (2, "invoice updated", self._update_invoice),
            (1, "invoice deleted", self._delete_invoice),
            (1, "vendor created", self._create_vendor),
        ]

    def _actions(self) -> list[tuple[str, Callable[[str], None]]]:
        return [(name, action) for _, name, action in self._table()]

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _pick(self, realm: str, entity: str) -> str | None:
        ids = self.emu.ids(realm, entity, include_inactive=False)
        return self.random.choice(ids) if ids else None

    def _create_customer(self, realm: str) -> None:
        n = self._next()
        self.emu.create(
            realm,
            "Customer",
            {
                "DisplayName": f"Demo Customer {n} {self.random.randrange(10**6)}",
                "PrimaryEmailAddr": {"Address": f"customer{n}@example.com"},
            },
        )

    def _update_customer(self, realm: str) -> None:
        customer = self._pick(realm, "Customer")
        if customer:
            self.emu.update(realm, "Customer", {"Id": customer, "Notes": f"note {self._next()}"})

    def _deactivate_customer(self, realm: str) -> None:
        customer = self._pick(realm, "Customer")
        if customer:
            self.emu.deactivate(realm, "Customer", customer)

    def _create_invoice(self, realm: str) -> None:
        customer = self._pick(realm, "Customer")
        if customer:
            amount = round(self.random.uniform(10, 900), 2)
            self.emu.create(
                realm,
                "Invoice",
                {
                    "CustomerRef": {"value": customer},
                    "Line": [
                        {
                            "Amount": amount,
                            "DetailType": "SalesItemLineDetail",
                            "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
                        }
                    ],
                },
            )

    def _update_invoice(self, realm: str) -> None:
        invoice = self._pick(realm, "Invoice")
        if invoice:
            self.emu.update(
                realm, "Invoice", {"Id": invoice, "PrivateNote": f"edit {self._next()}"}
            )

    def _delete_invoice(self, realm: str) -> None:
        invoice = self._pick(realm, "Invoice")
        if invoice:
            self.emu.delete(realm, "Invoice", invoice)

    def _create_vendor(self, realm: str) -> None:
        self.emu.create(
            realm,
            "Vendor",
            {"DisplayName": f"Demo Vendor {self._next()} {self.random.randrange(10**6)}"},
        )
