"""`qbo-poller deliveries list|redeliver`: look at the outbox and send things again.

`list` shows the newest notifications (held ones say which URL they wait for), then one line
per gone callback URL: one that answered 410 Gone, whose notifications are held without any
request until redelivered.

`redeliver` puts notifications back to pending with attempts 0; each goes to its instance's
callback URL of the moment (a URL changed since is used):
- `ID`: that notification, if held, dead or delivered;
- `--instance NAME`: that instance's held and dead notifications;
- `--all-dead`: every dead notification.
When the callback URL of an instance concerned (ID: the notification's instance; --instance:
that instance, even if nothing of it was waiting; --all-dead: the instances of the dead
notifications) is gone, the URL is reactivated too, and every held notification is released with
it: those held for that URL, of any instance (also of instances that point elsewhere now: they go
to their new URL), and those of every instance that points at that URL now.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from poller.logs import escape_controls, redact_url, redact_urls
from poller.store import db
from poller.store import notifications as store

EXIT_OK, EXIT_FAILED = 0, 1
_COLUMNS = (
    ("ID", 8, ">"),
    ("INSTANCE", 20, "<"),
    ("RESOURCE", 16, "<"),
    ("EVENTS", 6, ">"),
    ("STATUS", 9, "<"),
    ("ATTEMPTS", 8, ">"),
    ("NEXT ATTEMPT", 20, "<"),
    ("LAST", 0, "<"),
)


async def run_command(pool: db.Pool, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.deliveries_command == "list":
        return await _list(pool, args, out)
    if args.deliveries_command == "redeliver":
        return await _redeliver(pool, args, out)
    print(f"qbo-poller: unknown deliveries command {args.deliveries_command!r}", file=sys.stderr)
    return EXIT_FAILED


async def _instance(conn: db.Conn | db.Pool, name: str | None) -> tuple[bool, int | None]:
    if name is None:
        return True, None
    iid = await store.instance_id(conn, name)
    if iid is None:
        print(f"qbo-poller: no instance named {name!r}", file=sys.stderr)
        return False, None
    return True, iid


async def _list(pool: db.Pool, args: argparse.Namespace, out: TextIO) -> int:
    found, iid = await _instance(pool, getattr(args, "instance", None))
    if not found:
        return EXIT_FAILED
    rows = await store.listing(
        pool, bool(getattr(args, "dead", False)), iid, max(1, int(getattr(args, "limit", 50) or 50))
    )
    gone = await store.gone_endpoints(pool, iid)
    if not rows:
        print("no notifications", file=out)
    else:
        print(_line([c[0] for c in _COLUMNS]), file=out)
        for row in rows:
            print(_line(_cells(row)), file=out)
    _print_gone(gone, out)
    return EXIT_OK


def _cells(row: Any) -> list[str]:
    status = row["status"]
    if status == "pending":
        next_attempt, last = (
            _when(row["next_attempt_at"]),
            _last(row["last_status"], row["last_error"]),
        )
    elif status == "held":
        next_attempt, last = "on redelivery", _held(row["target_url"], row["callback_url"])
    else:
        next_attempt, last = "-", _last(row["last_status"], row["last_error"])
    return [
        str(row["id"]),
        row["instance"],
        row["resource"],
        str(row["event_count"]),
        status,
        str(row["attempts"]),
        next_attempt,
        last,
    ]


def _held(held_for: str | None, current: str | None) -> str:
    """Why a notification is held, and where redelivery would send it (URLs without their
    credentials and query: a table is pasted into tickets)."""
    text = f"410 Gone from {redact_url(held_for)}" if held_for else "410 Gone"
    if current != held_for:
        text += f"; redelivery goes to {redact_url(current) if current else '(no callback URL)'}"
    return text


def _print_gone(gone: list[store.GoneEndpoint], out: TextIO) -> None:
    if not gone:
        return
    held = sum(g.held for g in gone)
    print(
        f"gone URLs: {len(gone)} answered 410 Gone; {held} held notification(s) wait for "
        "`qbo-poller deliveries redeliver`",
        file=out,
    )
    for g in gone:
        users = escape_controls(", ".join(g.instances)) if g.instances else "no instance now"
        print(
            f"  {redact_url(g.url)}  gone since {_when(g.gone_at)}  held {g.held}  ({users})",
            file=out,
        )


def _line(cells: list[str]) -> str:
    parts = []
    for (_, width, align), cell in zip(_COLUMNS, cells, strict=True):
        cell = escape_controls(cell)  # names and receivers' errors: never raw ESC or CR
        if width:
            cell = cell if len(cell) <= width else cell[: width - 1] + "…"
            parts.append(f"{cell:{align}{width}}")
        else:
            parts.append(cell)
    return "  ".join(parts).rstrip()


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _last(status: int | None, error: str | None) -> str:
    shown_status = (
        "" if status is None or (error or "").startswith(f"HTTP {status}") else str(status)
    )
    text = " ".join(p for p in (shown_status, error or "") if p)
    text = redact_urls(" ".join(text.split()))  # one line, whatever the receiver sent
    return text[:80] or "-"


async def _redeliver(pool: db.Pool, args: argparse.Namespace, out: TextIO) -> int:
    async with db.acquire(pool) as conn:
        if getattr(args, "id", None) is not None:
            done = await store.redeliver_one(conn, args.id)
            if done.count:
                print(f"notification {args.id} queued for redelivery", file=out)
                _print_reactivated(done, out)
                return EXIT_OK
            print(
                f"qbo-poller: notification {args.id} not found or already pending", file=sys.stderr
            )
            return EXIT_FAILED
        if getattr(args, "instance", None):
            found, iid = await _instance(conn, args.instance)
            if not found or iid is None:
                return EXIT_FAILED
            done = await store.redeliver_instance(conn, iid)
            print(
                f"{done.count} dead or held notification(s) of {args.instance} queued for "
                "redelivery",
                file=out,
            )
            _print_reactivated(done, out)
            return EXIT_OK
        if getattr(args, "all_dead", False):
            done = await store.redeliver_all_dead(conn)
            print(f"{done.count} dead notification(s) queued for redelivery", file=out)
            _print_reactivated(done, out)
            return EXIT_OK
    print("qbo-poller: redeliver needs an ID, --instance NAME or --all-dead", file=sys.stderr)
    return EXIT_FAILED


def _print_reactivated(done: store.Redelivered, out: TextIO) -> None:
    if done.endpoints:
        urls = ", ".join(redact_url(url) for url in done.endpoints)
        print(
            f"reactivated gone URL(s) {urls}: {done.released} more held notification(s) "
            "queued for redelivery",
            file=out,
        )
