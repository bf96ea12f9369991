"""systemd notifications (sd_notify) over the NOTIFY_SOCKET datagram socket.

A no-op when NOTIFY_SOCKET is unset, so the same code runs outside systemd.
"""

from __future__ import annotations

import asyncio
import os
import socket

from poller.aio import sleep_unless
from poller.logs import get_logger
from poller.progress import ProgressBoard

log = get_logger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc))

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_usec_s(environ: dict[str, str] | None = None) -> float | None:
    """The watchdog period (WATCHDOG_USEC) in seconds, if the watchdog is on for this process."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC (systemd's advice), if the watchdog is on for this process."""
    period = watchdog_usec_s(environ)
    return None if period is None else period / 2


async def watchdog(
    notifier: Notifier,
    interval_s: float,
    stop: asyncio.Event,
    board: ProgressBoard | None = None,
    period_s: float | None = None,
) -> None:
    """Ping WATCHDOG=1 every `interval_s` while the event loop runs and no service on `board` has
    been inside one turn of its loop for longer than `period_s` (poller.progress); withhold it
    while one has, so that systemd restarts a daemon whose poller or dispatcher is stuck. One
    line when the pings stop, one when they resume."""
    period = period_s if period_s is not None else interval_s * 2
    withheld = False
    while True:
        stale = board.stale(period) if board is not None else []
        if not stale:
            notifier.notify("WATCHDOG=1")
            if withheld:
                log.info("watchdog_resumed")
            withheld = False
        elif not withheld:
            withheld = True
            log.error(
                "watchdog_withheld",
                stuck=[item.name for item in stale],
                silent_s=max(item.silent_s for item in stale),
                period_s=period,
                action="systemd restarts the daemon once the watchdog period passes",
            )
        if await sleep_unless(stop, interval_s):
            return
