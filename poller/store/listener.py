"""A LISTEN kept alive on a dedicated connection, reconnecting with backoff.

A pooled connection would UNLISTEN when it goes back to the pool, so a listener owns its own
connection (`poller.store.db.connect`). `Listener.run(stop)` keeps it listening on its channels
until `stop`: a lost connection (server restart, network) is reopened after 0.5 s, then with a
doubling delay up to `retry_max_s` while the server stays away; a half-open TCP connection,
which never reports itself, is found by a ping every `ping_s`.

Notifications sent while nobody listened are gone. `on_listening(missed)` runs each time LISTEN
is in place, with `missed` True unless this is the first attempt's connection, so the owner can
look in the database for what it may have missed (the outbox's due rows, the pairs' due times).

The poller's wake-ups (`poller.detect.wakeups`) and the dispatcher's outbox wake-up use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

import asyncpg

from poller.aio import sleep_unless
from poller.backoff import Backoff
from poller.errors import DatabaseError, DatabaseUnavailable
from poller.logs import get_logger
from poller.store.db import DRIVER_ERRORS, translated
from poller.store.sql import queries

log = get_logger(__name__)
Q = queries("listener")

PING_S = 30.0
RETRY_MAX_S = 30.0
# Reconnecting: 0.5 s after a connection that worked was lost, doubling while connecting keeps
# failing. One connection per process and purpose: no jitter needed.
LISTEN_BACKOFF = Backoff(base_s=0.5, cap_s=RETRY_MAX_S)
CONNECT_TIMEOUT_S = 10.0
PING_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0

Connect = Callable[[], Awaitable["asyncpg.Connection[asyncpg.Record]"]]
Handler = Callable[[str], None]  # a notification's payload; must not block
OnListening = Callable[[bool], Awaitable[None]]


class Listener:
    """LISTEN on `channels` (channel → handler of the payload) until `stop`; never raises for
    the database's failures. `listening` is set while LISTEN is in place."""

    def __init__(
        self,
        connect: Connect,
        channels: Mapping[str, Handler],
        *,
        name: str,
        on_listening: OnListening | None = None,
        ping_s: float = PING_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.connect = connect
        self.channels = dict(channels)
        self.name = name  # log events are "<name>_listen_lost", ...
        self.on_listening = on_listening
        self.ping_s = ping_s
        self.retry_max_s = retry_max_s
        self.listening = asyncio.Event()
        self.connections = 0  # LISTEN connections established so far (tests look)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = replace(LISTEN_BACKOFF, cap_s=self.retry_max_s)
        attempts = 0
        failures = 0  # connection attempts that failed since LISTEN last worked
        while not stop.is_set():
            attempts += 1
            established_before = self.connections
            error: BaseException | None = None
            try:
                await self._listen_once(stop, missed=attempts > 1)
            except DatabaseError as exc:
                error = exc
            failures = 1 if self.connections > established_before else failures + 1
            delay = backoff.delay(failures)
            if error is not None:
                log.warning(
                    f"{self.name}_listen_lost",
                    error=f"{type(error).__name__}: {error}",
                    retry_in_s=delay,
                )
            if await sleep_unless(stop, delay):
                return

    async def _listen_once(self, stop: asyncio.Event, *, missed: bool) -> None:
        """One LISTEN connection, until `stop` or until it is lost (raises `DatabaseError`)."""
        with translated():  # connecting, listening and the ping alike
            conn = await asyncio.wait_for(self.connect(), CONNECT_TIMEOUT_S)
        lost = asyncio.Event()
        try:
            with translated():
                conn.add_termination_listener(lambda _conn: lost.set())
                for channel, handler in self.channels.items():
                    await conn.add_listener(channel, self._callback(handler))
            self.connections += 1
            self.listening.set()
            log.debug(f"{self.name}_listening", channels=list(self.channels), missed=missed)
            await self._listening(missed)
            while not stop.is_set() and not lost.is_set():
                if not await _first_of((stop, lost), self.ping_s):
                    # A half-open TCP connection never reports itself: ask.
                    with translated():
                        await asyncio.wait_for(conn.fetchval(Q["ping"]), PING_TIMEOUT_S)
            if lost.is_set():
                raise DatabaseUnavailable("the LISTEN connection was closed")
        finally:
            self.listening.clear()
            await _close_quietly(conn)

    async def _listening(self, missed: bool) -> None:
        if self.on_listening is None:
            return
        try:
            await self.on_listening(missed)
        except Exception as exc:  # the owner's bug or database failure must not end the LISTEN
            log.error(f"{self.name}_listening_hook_failed", error=str(exc), exc_info=exc)

    def _callback(self, handler: Handler) -> Callable[[object, int, str, object], None]:
        def notified(_conn: object, _pid: int, channel: str, payload: object) -> None:
            try:
                handler(str(payload))
            except Exception as exc:  # asyncpg would only hand it to the loop's handler
                log.error(
                    f"{self.name}_notification_failed",
                    channel=channel,
                    error=str(exc),
                    exc_info=exc,
                )

        return notified


async def _first_of(events: tuple[asyncio.Event, ...], timeout: float) -> bool:
    """Wait until any event is set; False on timeout."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return bool(done)


async def _close_quietly(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_S)
    except DRIVER_ERRORS:
        conn.terminate()
    except asyncio.CancelledError:
        conn.terminate()
        raise


__all__ = ["Connect", "Handler", "Listener", "OnListening"]
