"""Command line: argument parsing → one function per command.

Exit codes: 0 success; 2 bad configuration or usage (one line on stderr, no traceback);
1 any other failure. Every failure goes through `poller.reporting` (the daemon's too). Admin
commands print only their output on stdout; logs go to stderr, warnings only unless `-v`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poller import __version__, logs, reporting
from poller.config import LOG_LEVELS, Settings, load_settings, read_environment, unknown_variables
from poller.errors import ConfigError
from poller.instances import ClientDefaults, Instance, load_file, parse_instance

if TYPE_CHECKING:
    from poller.store.crypto import SecretBox
    from poller.store.db import Pool
    from poller.store.sealed import Inventory

log = logs.get_logger(__name__)
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = reporting.EXIT_OK, reporting.EXIT_FAILED, reporting.EXIT_CONFIG
# Commands that parse their own arguments and read no configuration.
OWN_ARGUMENTS = frozenset({"emulator", "demo"})
# Options every command takes, before or after its name: value-taking ones first.
_GLOBAL_VALUE_OPTIONS = frozenset({"--env-file"})
_GLOBAL_FLAGS = frozenset({"-v", "-vv", "--verbose"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbo-poller", description="Turn QuickBooks Online changes into signed HTTP callbacks."
    )
    parser.add_argument("--version", action="version", version=f"qbo-poller {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("run", help="run the daemon (DATABASE_URL unset: embedded PostgreSQL)")
    sub.add_parser("migrate", help="apply pending database migrations")
    check = sub.add_parser(
        "check-config",
        help="validate the environment, POLLER_INSTANCES_FILE and the database",
    )
    check.add_argument(
        "--offline", action="store_true", help="do not connect to the database (DATABASE_URL)"
    )
    sub.add_parser(
        "keygen", help="print a new random POLLER_SECRET_KEY (alone on stdout; nothing stored)"
    )
    sub.add_parser(
        "rekey",
        help="re-encrypt every stored secret under POLLER_SECRET_KEY "
        "(after a rotation, or once a key is set)",
    )
    _instances_parser(sub)
    _deliveries_parser(sub)
    _connect_parser(sub)
    _users_parser(sub)
    emu = sub.add_parser("emulator", help="run the QuickBooks Online emulator", add_help=False)
    emu.add_argument("args", nargs=argparse.REMAINDER)
    demo = sub.add_parser(
        "demo", help="emulator + receiver + daemon, end to end, on this machine", add_help=False
    )
    demo.add_argument("args", nargs=argparse.REMAINDER)
    _add_global_options(parser)
    return parser


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """`--env-file` and `-v` on the program and on every (sub)command, so that they work
    anywhere on the command line. SUPPRESS: a level that does not see one leaves the value a
    level above set."""
    if parser.add_help:  # not the emulator and the demo: they parse their own
        parser.add_argument(
            "--env-file",
            metavar="PATH",
            default=argparse.SUPPRESS,
            help="read variables from PATH instead of ./.env (real environment wins)",
        )
        parser.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=argparse.SUPPRESS,
            help="log more on stderr: info (-vv: debug); admin commands log warnings only",
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_global_options(child)


def _instances_parser(sub: Any) -> None:
    inst = sub.add_parser("instances", help="manage instances (Open Connectors bodies)")
    isub = inst.add_subparsers(dest="instances_command", metavar="ACTION", required=True)
    add = isub.add_parser("add", help="add or update the instance(s) in FILE (object or array)")
    add.add_argument("file", type=Path)
    isub.add_parser("list", help="list instances")
    rm = isub.add_parser("remove", help="remove an instance and everything it owns")
    rm.add_argument("name")
    rm.add_argument(
        "--force", action="store_true", help="also when notifications are undelivered (cancelled)"
    )
    poll = isub.add_parser(
        "poll",
        help="poll an instance now (its pairs, or --resources), on whichever replica holds it",
    )
    poll.add_argument("name")
    poll.add_argument("--resources", metavar="A,B", help="only these resources (e.g. invoices)")


def _deliveries_parser(sub: Any) -> None:
    dl = sub.add_parser("deliveries", help="inspect and redeliver callbacks")
    dsub = dl.add_subparsers(dest="deliveries_command", metavar="ACTION", required=True)
    lst = dsub.add_parser("list", help="list notifications")
    lst.add_argument("--dead", action="store_true", help="only dead letters")
    lst.add_argument("--instance", metavar="NAME")
    lst.add_argument("--limit", type=int, default=50)
    red = dsub.add_parser(
        "redeliver",
        help="deliver again: one, an instance's dead/held, or all dead",
        description="Put notifications back to pending with attempts reset; each goes to its "
        "instance's current callback URL. A callback URL that answered 410 Gone is "
        "reactivated with them, releasing every notification held for it.",
    )
    group = red.add_mutually_exclusive_group(required=True)
    group.add_argument("id", nargs="?", type=int, help="one notification (held, dead or delivered)")
    group.add_argument(
        "--instance", metavar="NAME", help="that instance's held and dead notifications"
    )
    group.add_argument("--all-dead", action="store_true", help="every dead notification")


def _connect_parser(sub: Any) -> None:
    from poller.connect import add_arguments

    connect = sub.add_parser(
        "connect", help="connect a QuickBooks company from this terminal (OAuth 2.0 code flow)"
    )
    add_arguments(connect)


def _users_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="manage HTTP API users (DESIGN §9)")
    usub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = usub.add_parser("add", help="add a user; prints its secret once, on the last line")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="sees and changes every instance")
    usub.add_parser("list", help="list users (never their secrets)")
    rotate = usub.add_parser("rotate", help="a new secret for NAME (the old one stops working)")
    rotate.add_argument("name")
    remove = usub.add_parser("remove", help="remove a user (its instances stay, for admins)")
    remove.add_argument("name")


def _emulator_installed(command: str) -> bool:
    """The emulator and the demo need the separate ``qbo_emulator`` package (not in the
    container image); without it they say so in one line."""
    if importlib.util.find_spec("qbo_emulator") is not None:
        return True
    print(
        f"qbo-poller {command}: the qbo_emulator package is not installed "
        "(install qbo-poller from a source checkout)",
        file=sys.stderr,
    )
    return False


def _run_emulator(argv: list[str]) -> int:
    """``qbo-poller emulator``: the separate ``qbo_emulator`` package, when it is installed."""
    if not _emulator_installed("emulator"):
        return EXIT_FAILED
    from qbo_emulator.cli import main as emulator_main

    return emulator_main(argv, prog="qbo-poller emulator")


def _own_arguments(argv: list[str]) -> tuple[str, list[str]] | None:
    """(command, its arguments) when the command is one that parses its own (the emulator, the
    demo), found after any global options."""
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in _GLOBAL_VALUE_OPTIONS:
            index += 2
        elif word in _GLOBAL_FLAGS or word.startswith("--env-file="):
            index += 1
        else:
            return (word, argv[index + 1 :]) if word in OWN_ARGUMENTS else None
    return None


def _run_own(command: str, argv: list[str]) -> int:
    if command == "emulator":
        return _run_emulator(argv)
    if not _emulator_installed("demo"):
        return EXIT_FAILED
    from poller.demo import main as demo_main

    return demo_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = _own_arguments(argv)
    try:
        if own is not None:
            return _run_own(*own)
        return _dispatch(build_parser().parse_args(argv))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # known failures become one line; a bug keeps its traceback
        code = reporting.report(exc)
        if code is None:
            raise
        return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        # Before the settings: keygen is how a refused POLLER_SECRET_KEY gets fixed.
        return cmd_keygen()
    env_file = getattr(args, "env_file", None)
    env = read_environment(env_file)
    settings = load_settings(env, env_file=env_file)
    logs.configure(
        log_level(args.command, getattr(args, "verbose", 0), settings), settings.log_format
    )
    if args.command in ("run", "check-config"):
        _warn_unknown_variables(env, to_log=args.command == "run")
    return COMMANDS[args.command](args, settings)


def log_level(command: str, verbose: int, settings: Settings) -> str:
    """`run` logs at POLLER_LOG_LEVEL; admin commands only warnings, so that stdout and stderr
    hold their output and little else. `-v` (info) and `-vv` (debug) add to either."""
    base = settings.log_level if command == "run" else "warning"
    if not verbose:
        return base
    wanted = "info" if verbose == 1 else "debug"
    return min(base, settings.log_level, wanted, key=LOG_LEVELS.index)


def _warn_unknown_variables(env: dict[str, str], *, to_log: bool) -> None:
    for line in unknown_variables(env):
        if to_log:
            log.warning("unknown_variable", variable=line.partition(":")[0], detail=line)
        else:
            reporting.warn(line)


def _defaults(settings: Settings) -> ClientDefaults:
    return ClientDefaults(settings.qbo_client_id, settings.qbo_client_secret)


def startup_instances(settings: Settings, *, to_log: bool = True) -> list[Instance]:
    """The instances of POLLER_INSTANCES_FILE; a file with none says so once."""
    if settings.instances_file is None:
        return []
    instances = load_file(settings.instances_file, _defaults(settings))
    if not instances:
        line = f"POLLER_INSTANCES_FILE={str(settings.instances_file)!r}: no instance in the file"
        if to_log:
            log.warning("instances_file_empty", path=str(settings.instances_file), detail=line)
        else:
            reporting.warn(line)
    return instances


def cmd_run(_args: argparse.Namespace, settings: Settings) -> int:
    from poller import supervisor

    instances = startup_instances(settings)  # invalid files stop start-up before anything runs
    # SIGHUP re-reads the same file; nothing to re-read without one.
    reload = (
        None if settings.instances_file is None else functools.partial(startup_instances, settings)
    )
    return asyncio.run(supervisor.run(settings, instances, reload_instances=reload))


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from poller import checks

    instances = startup_instances(settings, to_log=False)
    inventory = None
    if args.offline:
        where = "DATABASE_URL" if settings.database_url else f"embedded in {settings.data_dir}"
        database = f"{where} (not checked: --offline)"
    else:
        report = asyncio.run(checks.check_database(settings))
        database, inventory = report.description, report.secrets
    print(f"configuration ok: database {database}; {len(instances)} instance(s)")
    if inventory is not None:
        print(
            f"  secret key: opens the {inventory.stored} stored secret(s){_rekey_hint(inventory)}"
        )
    for inst in instances:
        print(
            f"  {inst.name}: realm {inst.realm_id}, {len(inst.resources)} resources, "
            f"every {inst.refresh_interval_s / 60:g} min, events "
            f"{'on' if inst.events_enabled else 'off'}"
        )
    return EXIT_OK


def secret_box(settings: Settings) -> SecretBox:
    """The box of the configured keys: POLLER_SECRET_KEY, then POLLER_SECRET_KEY_PREVIOUS."""
    from poller.store.crypto import SecretBox

    return SecretBox(settings.secret_key, settings.secret_key_previous)


def _rekey_hint(inventory: Inventory) -> str:
    if not inventory.not_current:
        return ""
    return f"; {inventory.not_current} not under the current key: run qbo-poller rekey"


def cmd_keygen() -> int:
    from poller.secret_keys import generate_key

    print(generate_key())
    return EXIT_OK


def cmd_rekey(_args: argparse.Namespace, settings: Settings) -> int:
    from poller.store import db, sealed

    async def go() -> int:
        box = secret_box(settings)
        sealed.require_key(box)  # before starting an embedded database for nothing
        async with _database(settings) as pool, db.acquire(pool) as conn:
            done = await sealed.rekey(conn, box)
        print(
            f"rekey: {done.resealed} secret(s) re-encrypted under the current key "
            f"({done.from_clear} were in clear), {done.unchanged} already were"
        )
        return EXIT_OK

    return asyncio.run(go())


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Pool]:
    """The pool of a one-shot command: DATABASE_URL or the embedded server, migrated."""
    from poller.store.database import open_database

    async with open_database(
        settings.database_url,
        settings.data_dir,
        pool_size=2,
        migrate_first=settings.auto_migrate,
    ) as database:
        yield database.pool


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from poller.store.database import open_database

    async def go() -> int:
        async with open_database(settings.database_url, settings.data_dir, pool_size=1) as database:
            applied = database.applied
            version = database.schema_version
        outcome = f" (applied {applied})" if applied else " (up to date)"
        print(f"schema at version {version}{outcome}")
        return EXIT_OK

    return asyncio.run(go())


def cmd_instances(args: argparse.Namespace, settings: Settings) -> int:
    from poller.store import instance_rows, sealed

    # A bad FILE is refused before any database is opened (or an embedded one started).
    adding = (
        load_file(args.file, _defaults(settings), source="FILE")
        if args.instances_command == "add"
        else []
    )
    if args.instances_command == "add" and not adding:
        raise ConfigError(f"FILE={str(args.file)!r}: the array holds no instances")

    async def go() -> int:
        async with _database(settings) as pool, pool.acquire() as conn:
            if args.instances_command == "add":
                box = secret_box(settings)
                # Never add secrets under a key the stored ones were not written with.
                await sealed.check_readable(conn, box)
                for inst in adding:
                    result = await instance_rows.upsert(conn, inst, box)
                    print(f"{result.action}: {inst.name} (id {result.instance_id})")
                return EXIT_OK
            if args.instances_command == "poll":
                return await _request_poll(conn, args.name, args.resources)
            if args.instances_command == "remove":
                return await _remove(conn, args.name, args.force)
            _print_instances(await instance_rows.list_all(conn))
            return EXIT_OK

    return asyncio.run(go())


async def _remove(conn: Any, name: str, force: bool) -> int:
    """`instances remove NAME [--force]`: refused while notifications are undelivered."""
    from poller.store import instance_rows

    removal = await instance_rows.remove_unless_undelivered(conn, name, force=force)
    if not removal.found:
        print(f"qbo-poller: no instance named {name!r}", file=sys.stderr)
        return EXIT_FAILED
    waiting = (
        f"{removal.pending} pending, {removal.held} held and {removal.dead} dead notification(s)"
    )
    if not removal.removed:
        print(
            f"qbo-poller: {name} has {waiting} not delivered; let them deliver or redeliver "
            f"them (qbo-poller deliveries list --instance {name}), or remove with --force to "
            "cancel them",
            file=sys.stderr,
        )
        return EXIT_FAILED
    cancelled = f", cancelled {waiting}" if removal.undelivered else ""
    print(f"removed: {name}{cancelled}")
    return EXIT_OK


async def _request_poll(conn: Any, name: str, listed: str | None) -> int:
    """`instances poll NAME [--resources a,b]`: make the pairs due now (poller.store.polls)."""
    from poller import resources
    from poller.store import instance_rows, polls

    entities = None
    if listed is not None:
        names = [part.strip() for part in listed.split(",") if part.strip()]
        unknown = [part for part in names if part not in resources.ALL_RESOURCES]
        if unknown or not names:
            raise ConfigError(f"--resources: unknown resource(s) {', '.join(unknown) or listed!r}")
        entities = [resources.get(part).entity for part in names]
    found = [row for row in await instance_rows.list_all(conn) if row["name"] == name]
    if not found:
        print(f"qbo-poller: no instance named {name!r}", file=sys.stderr)
        return EXIT_FAILED
    result = await polls.request_poll(conn, instance_id=found[0]["id"], entities=entities)
    if result.pairs == 0:
        row = found[0]
        if not row["events_enabled"]:
            why = "its events are disabled"
        elif row["status"] != "active":
            why = f"it is {row['status']}"
        else:
            why = "it polls none of these resources"
        print(f"nothing to poll for {name}: {why}")
        return EXIT_FAILED
    print(f"poll requested: {name}, {result.pairs} pair(s)")
    return EXIT_OK


def _print_instances(rows: Sequence[Any]) -> None:
    if not rows:
        print("no instances")
        return
    print(
        f"{'ID':>4}  {'NAME':<24} {'REALM':<20} {'STATUS':<16} {'RES':>3} {'EVERY':>8} "
        f"{'PENDING':>7} {'DEAD':>5}"
    )
    for row in rows:
        print(
            f"{row['id']:>4}  {logs.escape_controls(row['name'])[:24]:<24} "
            f"{row['realm_id']:<20} {row['status']:<16} "
            f"{len(row['resources']):>3} {row['refresh_interval_s'] / 60:>7g}m {row['pending']:>7} "
            f"{row['dead']:>5}"
        )


def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    from poller.deliver import admin

    async def go() -> int:
        async with _database(settings) as pool:
            return int(await admin.run_command(pool, args))

    return asyncio.run(go())


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from poller.manage import users
    from poller.store import users as user_rows

    async def go() -> int:
        async with _database(settings) as pool, pool.acquire() as conn:
            if args.users_command == "list":
                listed = await user_rows.list_all(conn)
                if not listed:
                    print("no users")
                for user in listed:
                    role = "admin" if user.admin else "user"
                    print(f"{user.name}  {role}  {user.instances} instance(s)")
                return EXIT_OK
            if args.users_command == "remove":
                if await user_rows.remove(conn, args.name):
                    print(f"removed: {args.name}")
                    return EXIT_OK
                print(f"qbo-poller: no user named {args.name!r}", file=sys.stderr)
                return EXIT_FAILED
            if args.users_command == "add":
                if not users.valid_name(args.name):
                    raise ConfigError(f"NAME={args.name!r}: 1 to 64 printable characters")
                secret = await users.add(conn, args.name, args.admin)
                if secret is None:
                    print(f"qbo-poller: a user named {args.name!r} exists", file=sys.stderr)
                    return EXIT_FAILED
                print(f"added: {args.name}{' (admin)' if args.admin else ''}; its secret:")
            else:
                secret = await users.rotate(conn, args.name)
                if secret is None:
                    print(f"qbo-poller: no user named {args.name!r}", file=sys.stderr)
                    return EXIT_FAILED
                print(f"rotated: {args.name}; its new secret:")
            # Alone on the last line, so scripts can take it with `tail -n1`; shown only now.
            print(secret)
            return EXIT_OK

    return asyncio.run(go())


def cmd_connect(args: argparse.Namespace, settings: Settings) -> int:
    from poller import connect
    from poller.store import instance_rows, sealed

    async def go() -> int:
        box = secret_box(settings)
        if args.out is None:
            # Before the consent: a wrong key must not cost the user a single-use code.
            async with _database(settings) as pool, pool.acquire() as conn:
                await sealed.check_readable(conn, box)
        try:
            body = await connect.connect(args, settings)
        except connect.FlowRefused as exc:
            print(f"qbo-poller connect: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except TimeoutError:
            print(f"qbo-poller connect: no consent within {args.timeout:g} s", file=sys.stderr)
            return EXIT_FAILED
        realm = body["providerData"]["realmId"]
        if args.out is not None:
            connect.write_body(args.out, body)
            print(f"connected realm {realm}: instance body written to {args.out}")
            return EXIT_OK
        instance = parse_instance(body, _defaults(settings))
        async with _database(settings) as pool, pool.acquire() as conn:
            result = await instance_rows.upsert(conn, instance, box)
        print(f"connected realm {realm}: {result.action} {instance.name} (id {result.instance_id})")
        return EXIT_OK

    return asyncio.run(go())


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": cmd_run,
    "migrate": cmd_migrate,
    "check-config": cmd_check_config,
    "rekey": cmd_rekey,
    "instances": cmd_instances,
    "deliveries": cmd_deliveries,
    "users": cmd_users,
    "connect": cmd_connect,
}
