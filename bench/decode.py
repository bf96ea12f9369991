"""Decoding a QBO answer: the ways to read one body while keeping QuickBooks' number literals.

Builds a 1000-object CDC answer (600 invoices, 400 customers, as the emulator writes them) and
times, per answer:
- `two decodes (old)`: orjson to look for a Fault, then the standard library with a Python
  float callback (what the client did before issue 17);
- `stdlib + Fragment`: one standard-library decode, `parse_float=orjson.Fragment` (no Python
  callback), the Fault looked for in the decoded document;
- `msgspec + Fragment`: one msgspec decode with `float_hook=orjson.Fragment`;
- `orjson (loses literals)`: the floor, for reference: it prints 12.5 for QBO's 12.50.
Each candidate's re-serialized answer is checked byte for byte against the body.

    .venv/bin/python bench/decode.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poller.qbo import faults
from qbo_emulator import Emulator


def cdc_body(invoices: int = 600, customers: int = 400) -> bytes:
    emu = Emulator(per_second=None, per_minute=None, in_flight=None)
    realm = emu.add_realm("9130350000000001", seed=1, per_entity={"Invoice": invoices})
    emu.fill(realm, seed=2, per_entity={"Customer": customers})
    emu.clock.advance(1)
    since = emu.clock.now()
    for object_id in emu.ids(realm, "Invoice")[:invoices]:
        emu.update(realm, "Invoice", {"Id": object_id, "PrivateNote": "bench"})
    for object_id in emu.ids(realm, "Customer")[:customers]:
        emu.update(realm, "Customer", {"Id": object_id, "Notes": "bench"})
    return emu.dumps(emu.api_cdc(realm, "Customer,Invoice", since.isoformat()))


def _old_float(literal: str) -> orjson.Fragment:
    return orjson.Fragment(literal.encode())


def two_decodes(body: bytes) -> Any:
    faults.parse_fault(body)
    return json.loads(body, parse_float=_old_float)


_MSGSPEC = msgspec.json.Decoder(float_hook=orjson.Fragment)

CANDIDATES: dict[str, Callable[[bytes], Any]] = {
    "two decodes (old)": two_decodes,
    "stdlib + Fragment": lambda body: json.loads(body, parse_float=orjson.Fragment),
    "msgspec + Fragment": _MSGSPEC.decode,
    "orjson (loses literals)": orjson.loads,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    body = cdc_body()
    print(f"CDC answer: {len(body) / 2**20:.2f} MiB, 1000 objects; load average {os.getloadavg()}")
    for name, decode in CANDIDATES.items():
        same = orjson.dumps(decode(body)) == orjson.dumps(orjson.Fragment(body))
        samples = []
        for _ in range(args.rounds):
            t0 = time.process_time()
            decode(body)
            samples.append(time.process_time() - t0)
        med = statistics.median(samples) * 1000
        print(
            f"  {name:<28} {med:7.2f} ms CPU per answer ({med:5.3f} ms per 1000 objects → "
            f"{1000 / med * 1000:8.0f} objects/s)  literals kept: {same}"
        )


if __name__ == "__main__":
    main()
