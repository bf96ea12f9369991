"""``qbo-emulator`` (also ``qbo-poller emulator``): serve the QBO emulator until SIGINT/SIGTERM.

Prints the base URL, the token URL, the OAuth client and, for each realm, a
ready refresh token (a connected company), then serves.  Exit code 0 on a
signal, 2 on bad arguments, 1 if the port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from . import state
from .core import Emulator
from .handle import run_emulator
from .oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

DEFAULT_REALM = "9130350000000001"
PROG = "qbo-emulator"
NO_LIMITS = {"per_minute": None, "per_second": None, "in_flight": None}


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve a QuickBooks Online emulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks one)")
    parser.add_argument(
        "--realm",
        action="append",
        dest="realms",
        metavar="ID",
        help=f"realm (company) id; repeatable (default {DEFAULT_REALM})",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--per-entity", type=int, default=20, help="objects per entity per realm (default 20)"
    )
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="OAuth client id")
    parser.add_argument(
        "--client-secret", default=DEFAULT_CLIENT_SECRET, help="OAuth client secret"
    )
    parser.add_argument(
        "--access-token-lifetime",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="access token lifetime in seconds (default 3600)",
    )
    parser.add_argument(
        "--refresh-rotation",
        choices=("always", "daily", "never"),
        default="always",
        help="when refresh tokens rotate (default always)",
    )
    parser.add_argument(
        "--no-limits", action="store_true", help="disable the 500/min, 10/s, 10-in-flight limits"
    )
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        help="send every realm's changes to URL as Intuit webhooks (needs --webhook-verifier)",
    )
    parser.add_argument(
        "--webhook-format",
        choices=("legacy", "cloudevents"),
        default="legacy",
        help="webhook payload format (default legacy)",
    )
    parser.add_argument(
        "--webhook-verifier", metavar="TOKEN", help="the verifier token webhooks are signed with"
    )
    parser.add_argument(
        "--webhook-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long changes are batched into one notification (default 1)",
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="load objects, ids, tokens and the clock from FILE at start (if it exists) "
        "and save them there on shutdown and every --state-interval seconds",
    )
    parser.add_argument(
        "--state-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often --state is saved while serving (default 10)",
    )
    return parser


def _print_connection(emu: Emulator, args: argparse.Namespace) -> None:
    """What a client needs to connect: URLs, the OAuth client, one refresh token per realm."""
    print(f"QBO emulator listening on {emu.base_url}")
    print(f"base_url={emu.base_url}")
    print(f"token_url={emu.token_url}")
    print(f"revoke_url={emu.revoke_url}")
    print(f"discovery_url={emu.discovery_url}")
    print(f"client_id={emu.client_id}")
    print(f"client_secret={emu.client_secret}")
    for realm in args.realms or [DEFAULT_REALM]:
        if realm not in emu.realms:  # a realm loaded from --state keeps its data
            emu.add_realm(realm, seed=args.seed, per_entity=args.per_entity)
        tokens = emu.issue_tokens(realm)
        print(f"realm={realm} refresh_token={tokens['refresh_token']}")
    sys.stdout.flush()


async def _serve(args: argparse.Namespace, prog: str) -> int:
    limits: dict[str, Any] = dict(NO_LIMITS) if args.no_limits else {}
    options: dict[str, Any] = dict(
        client_id=args.client_id,
        client_secret=args.client_secret,
        access_token_lifetime=args.access_token_lifetime,
        refresh_rotation=args.refresh_rotation,
        **limits,
    )
    try:
        server = run_emulator(args.host, args.port, **options)
        emu = await server.__aenter__()
    except OSError as exc:
        print(f"{prog}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if args.state:
            emu.load_state(args.state)
        if args.webhook_url:
            emu.configure_webhooks(
                None,
                args.webhook_url,
                args.webhook_verifier,
                format=args.webhook_format,
                delay_s=args.webhook_delay,
            )
            print(f"webhooks={args.webhook_url} format={args.webhook_format}")
        _print_connection(emu, args)
        await _wait_saving(emu, args, stop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        return 0
    finally:
        await server.__aexit__(None, None, None)


async def _wait_saving(emu: Emulator, args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Serve until ``stop``; with ``--state``, save periodically and once more at the end."""
    if not args.state:
        await stop.wait()
        return
    saver = asyncio.create_task(state.autosave(emu, args.state, args.state_interval))
    try:
        await stop.wait()
    finally:
        saver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await saver
        emu.save_state(args.state)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on errors
        return int(exc.code or 0)
    if args.per_entity < 0:
        print(f"{prog}: --per-entity must be >= 0", file=sys.stderr)
        return 2
    if args.webhook_url and not args.webhook_verifier:
        print(f"{prog}: --webhook-url needs --webhook-verifier", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args, prog))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
