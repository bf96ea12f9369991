"""`qbo-poller deliveries list|redeliver`: look at the outbox and send things again."""
from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import asyncpg

from poller.store import notifications as store

EXIT_OK, EXIT_FAILED = 0, 1
_COLUMNS = (("ID", 8, ">"), ("INSTANCE", 20, "<"), ("RESOURCE", 16, "<"), ("EVENTS", 6, ">"),
            ("STATUS", 9, "<"), ("ATTEMPTS", 8, ">"), ("NEXT ATTEMPT", 20, "<"), ("LAST", 0, "<"))


async def run_command(pool: asyncpg.Pool, args: argparse.Namespace,
                      out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.deliveries_command == "list":
        return await _list(pool, args, out)
    if args.deliveries_command == "redeliver":
        return await _redeliver(pool, args, out)
    print(f"qbo-poller: unknown deliveries command {args.deliveries_command!r}", file=sys.stderr)
    return EXIT_FAILED


async def _instance(pool: asyncpg.Pool, name: str | None) -> tuple[bool, int | None]:
    if name is None:
        return True, None
    iid = await store.instance_id(pool, name)
    if iid is None:
        print(f"qbo-poller: no instance named {name!r}", file=sys.stderr)
        return False, None
    return True, iid


async def _list(pool: asyncpg.Pool, args: argparse.Namespace, out: TextIO) -> int:
    found, iid = await _instance(pool, getattr(args, "instance", None))
    if not found:
        return EXIT_FAILED
    rows = await store.listing(pool, bool(getattr(args, "dead", False)), iid,
                               max(1, int(getattr(args, "limit", 50) or 50)))
    if not rows:
        print("no notifications", file=out)
        return EXIT_OK
    print(_line([c[0] for c in _COLUMNS]), file=out)
    for r in rows:
        print(_line(_cells(r)), file=out)
    return EXIT_OK


def _cells(r: Any) -> list[str]:
    next_attempt = _when(r["next_attempt_at"]) if r["status"] == "pending" else "-"
    return [str(r["id"]), r["instance"], r["resource"], str(r["event_count"]), r["status"],
            str(r["attempts"]), next_attempt, _last(r["last_status"], r["last_error"])]


def _line(cells: list[str]) -> str:
    parts = []
    for (_, width, align), cell in zip(_COLUMNS, cells, strict=True):
        if width:
            cell = cell if len(cell) <= width else cell[:width - 1] + "…"
            parts.append(f"{cell:{align}{width}}")
        else:
            parts.append(cell)
    return "  ".join(parts).rstrip()


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _last(status: int | None, error: str | None) -> str:
    shown_status = "" if status is None or (error or "").startswith(f"HTTP {status}") else str(status)
    text = " ".join(p for p in (shown_status, error or "") if p)
    text = " ".join(text.split())   # one line, whatever the receiver sent
    return text[:80] or "-"


async def _redeliver(pool: asyncpg.Pool, args: argparse.Namespace, out: TextIO) -> int:
    async with pool.acquire() as conn:
        if getattr(args, "id", None) is not None:
            if await store.redeliver_one(conn, args.id):
                print(f"notification {args.id} queued for redelivery", file=out)
                return EXIT_OK
            print(f"qbo-poller: notification {args.id} not found or already pending",
                  file=sys.stderr)
            return EXIT_FAILED
        if getattr(args, "instance", None):
            found, iid = await _instance(conn, args.instance)
            if not found or iid is None:
                return EXIT_FAILED
            count = await store.redeliver_instance(conn, iid)
            print(f"{count} dead or held notification(s) of {args.instance} queued for "
                  "redelivery", file=out)
            return EXIT_OK
        if getattr(args, "all_dead", False):
            count = await store.redeliver_all_dead(conn)
            print(f"{count} dead notification(s) queued for redelivery", file=out)
            return EXIT_OK
    print("qbo-poller: redeliver needs an ID, --instance NAME or --all-dead", file=sys.stderr)
    return EXIT_FAILED
