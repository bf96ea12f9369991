"""`qbo-poller demo`: everything end to end on one machine, with no configuration.

It starts, in one process: an embedded PostgreSQL in a temporary directory, the QuickBooks
emulator with a few companies changing at a steady rate, a receiver that verifies both
signatures, and the daemon itself (the same supervisor `qbo-poller run` uses), polling every
few seconds. Each callback event is printed as it arrives; Ctrl-C, SIGTERM or `--duration`
ends it, and everything it started is stopped and removed.

The console (DESIGN §10) is on: the demo prints its URL and a ready login (a demo user and
the organization secret); "Connect to QuickBooks" goes to the emulator's consent page, which
approves at once, so a newcomer can create an instance and watch its events in the browser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from poller import logs
from poller.aio import sleep_unless
from poller.config import Settings, load_settings
from poller.demo.changes import ChangeDriver
from poller.demo.receiver import Received, Receiver, run_receiver
from poller.instances import Instance, parse_instance
from poller.manage import users
from poller.secret_keys import generate_key
from poller.store import db

if TYPE_CHECKING:
    from qbo_emulator.core import Emulator

DEMO_REALMS = ("9341453050010001", "9341453050010002", "9341453050010003")
REDIRECT_URI = "http://127.0.0.1/demo/oauth"
WEBHOOK_BATCH_S = 0.5  # the emulator's aggregation delay (Intuit batches for longer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qbo-poller demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after SECONDS (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--realms",
        type=int,
        default=3,
        choices=range(1, len(DEMO_REALMS) + 1),
        help="companies to simulate (default 3)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=2.0,
        metavar="PER_SECOND",
        help="changes per second across all companies (default 2)",
    )
    parser.add_argument(
        "--interval", type=float, default=3.0, metavar="SECONDS", help="poll interval (default 3)"
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="the faster path: the emulator sends Intuit webhooks (CloudEvents), the daemon polls "
        "on each at once, and polling every 60 minutes is only the backstop",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run_demo(args))
    except KeyboardInterrupt:
        return 0


class Printer:
    """The live stream and the summary."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.out = out
        self.started = started
        self.types: Counter[str] = Counter()
        self.bad_signatures = 0
        self.notifications = 0

    def __call__(self, received: Received) -> None:
        self.notifications += 1
        message = received.message
        verified = received.elements_ok is not False and received.standard_ok is not False
        self.bad_signatures += not verified
        signature = "signature ok" if verified else "SIGNATURE FAILED"
        for event in received.events:
            self.types[event["eventType"]] += 1
            print(
                f"{time.time() - self.started:7.1f}s  {event['eventType']:<8} "
                f"{event['objectType']:<16} id {event['objectId']:<6} realm {message['realmId']}  "
                f"{signature}",
                file=self.out,
                flush=True,
            )

    def summary(self, elapsed: float) -> None:
        total = sum(self.types.values())
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(self.types.items())) or "none"
        print(
            f"\nsummary: {total} events in {self.notifications} signed callbacks over "
            f"{elapsed:.0f}s ({kinds}); signature failures: {self.bad_signatures}",
            file=self.out,
            flush=True,
        )


def instance_body(
    name: str,
    realm: str,
    code: str,
    client_id: str,
    client_secret: str,
    callback_url: str,
    signature_key: str,
    interval_s: float,
    webhooks: bool = False,
) -> dict[str, object]:
    polling = {"event.poller.refresh_interval": str(interval_s / 60)}
    vendor = {"event.vendor.type": "webhook"} if webhooks else polling  # webhook: 60-min backstop
    return {
        "element": {"key": "quickbooks"},
        "providerData": {"code": code, "realmId": realm},
        "configuration": {
            "oauth.callback.url": REDIRECT_URI,
            "oauth.api.key": client_id,
            "oauth.api.secret": client_secret,
            "authentication.type": "oauth2",
            "event.notification.enabled": True,
            **vendor,
            "event.notification.callback.url": callback_url,
            "event.notification.signature.key": signature_key,
            "event.poller.urls": "customers|invoices|payments|products|vendors|bills",
        },
        "tags": ["demo"],
        "name": name,
    }


async def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from poller import supervisor
    from qbo_emulator import run_emulator

    out = out or sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="qbo-poller-demo-"))
    log_stream = open(workdir / "daemon.log", "w", encoding="utf-8")  # noqa: SIM115
    logs.configure("warning", "console", log_stream if not isinstance(out, io.StringIO) else out)
    started = time.time()
    printer = Printer(out, started)
    stop = asyncio.Event()
    try:
        async with contextlib.AsyncExitStack() as stack:
            emu = await stack.enter_async_context(run_emulator(per_second=None))
            realms = [
                emu.add_realm(r, seed=i + 1, per_entity=5)
                for i, r in enumerate(DEMO_REALMS[: args.realms])
            ]
            receiver = Receiver(on_notification=printer)
            callback_url = await stack.enter_async_context(run_receiver(receiver))
            instances = _instances(
                emu, realms, receiver, callback_url, args.interval, args.webhooks
            )
            verifier = secrets.token_urlsafe(24)
            settings = _settings(workdir, emu, verifier if args.webhooks else None)
            if args.webhooks:
                _send_webhooks(emu, settings, verifier)
            login = DemoLogin(settings, out)
            print(
                f"qbo-poller demo: {len(realms)} companies in the emulator at {emu.base_url}, "
                f"callbacks to {callback_url}, {_how(args)}. Ctrl-C to stop.",
                file=out,
                flush=True,
            )
            driver = ChangeDriver(emu, realms, rate=args.rate, seed=7)
            daemon = supervisor.run(settings, instances, service_factory=login.services, stop=stop)
            code = await _run_until_stopped(daemon, driver, stop, args.duration)
    finally:
        log_stream.close()
        printer.summary(time.time() - started)
        shutil.rmtree(workdir, ignore_errors=True)
    return code


def _how(args: argparse.Namespace) -> str:
    if args.webhooks:
        return "Intuit webhooks announce changes (polling every 60 minutes is the backstop)"
    return f"polling every {args.interval:g}s"


def _send_webhooks(emu: Emulator, settings: Settings, verifier: str) -> None:
    """Every company's changes are announced to the daemon's receiver, as Intuit does."""
    assert settings.http_addr is not None
    url = f"http://{settings.http_addr}/elements/api-v2/events/quickbooks"
    emu.configure_webhooks(None, url, verifier, format="cloudevents", delay_s=WEBHOOK_BATCH_S)


def _instances(
    emu: Emulator,
    realms: list[str],
    receiver: Receiver,
    callback_url: str,
    interval_s: float,
    webhooks: bool = False,
) -> list[Instance]:
    instances = []
    for n, realm in enumerate(realms, start=1):
        key = "whsec_" + _b64(secrets.token_bytes(24)) if n % 2 else secrets.token_urlsafe(24)
        name = f"Demo company {n}"
        receiver.keys[name] = key
        code = emu.issue_auth_code(realm, redirect_uri=REDIRECT_URI)
        body = instance_body(
            name,
            realm,
            code,
            emu.client_id,
            emu.client_secret,
            callback_url,
            key,
            interval_s,
            webhooks,
        )
        instances.append(parse_instance(body))
    return instances


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _settings(workdir: Path, emu: Emulator, verifier: str | None = None) -> Settings:
    assert emu.base_url is not None and emu.token_url is not None  # served by run_emulator
    port = _free_port()
    webhooks = {} if verifier is None else {"QBO_WEBHOOK_VERIFIER_TOKEN": verifier}
    return load_settings(
        env={
            **webhooks,
            "POLLER_DATA_DIR": str(workdir),
            "QBO_API_BASE_URL": emu.base_url,
            "QBO_OAUTH_TOKEN_URL": emu.token_url,
            # A fixed port: the console's OAuth redirect URI names it.
            "POLLER_HTTP_ADDR": f"127.0.0.1:{port}",
            "POLLER_API_ORGANIZATION_SECRET": secrets.token_urlsafe(24),
            "QBO_CLIENT_ID": emu.client_id,
            "QBO_CLIENT_SECRET": emu.client_secret,
            "QBO_OAUTH_AUTHORIZE_URL": f"{emu.base_url}/connect/oauth2",
            "POLLER_SECRET_KEY": generate_key(),
            "POLLER_OVERLAP_SECONDS": "5",
            "POLLER_RETRY_SCHEDULE": "1s,2s,5s,10s",
            "POLLER_DELIVERY_POLL_INTERVAL": "0.5s",
            "POLLER_SHUTDOWN_GRACE_SECONDS": "3",
        }
    )


async def _run_until_stopped(
    daemon: Coroutine[Any, Any, int],
    driver: ChangeDriver,
    stop: asyncio.Event,
    duration: float | None,
) -> int:
    async with asyncio.TaskGroup() as group:
        daemon_task = group.create_task(daemon, name="daemon")
        group.create_task(driver.run(stop), name="changes")
        if duration is not None:
            group.create_task(_stop_after(stop, duration), name="duration")
        code = await daemon_task
        stop.set()  # the daemon ended (signal or failure): stop the rest too
    return int(code)


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await sleep_unless(stop, seconds)
    stop.set()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DemoLogin:
    """Adds a `demo` user once the daemon's database is ready and prints the console's URL
    with the login (a service beside the pipeline's, so it uses the daemon's own pool)."""

    name = "demo-login"

    def __init__(self, settings: Settings, out: TextIO) -> None:
        self.settings = settings
        self.out = out
        self.pool: db.Pool | None = None

    def services(self, runtime: Any) -> list[Any]:
        from poller import supervisor

        self.pool = runtime.pool
        return [*supervisor.default_services(runtime), self]

    async def run(self, stop: asyncio.Event) -> None:
        assert self.pool is not None  # set by services()
        async with db.acquire(self.pool) as conn:
            secret = await users.add(conn, "demo", admin=False)
        print(
            f"console: {self.settings.console_url()}/ui/  (user secret {secret}, organization "
            f"secret {self.settings.api_organization_secret}); Connect to QuickBooks goes to the "
            "emulator, which approves at once",
            file=self.out,
            flush=True,
        )
        await stop.wait()
