"""The embedded PostgreSQL used when DATABASE_URL is unset (DESIGN §7, §8).

The binaries are the `pgserver` package's; this module runs them itself. pgserver starts the
server with `pg_ctl start`, which detaches it (setsid, re-parented to init): it outlived a
killed daemon or a closed terminal, and the next daemon silently joined the orphan. Here:

- One process owns the server: the one holding an exclusive flock on
  `<POLLER_DATA_DIR>/embedded.lock` (the kernel releases it however the owner dies). The daemon
  (`exclusive`) refuses a server another process owns, with one line (exit 2); a one-shot command
  (`instances list` beside a running daemon) joins it, or owns a server of its own if none runs.
- The server is the owner's child, started through a tiny exec wrapper (`_GUARD`) that sets
  PR_SET_PDEATHSIG=SIGINT and then becomes postgres (Linux): when the owner dies, even by
  SIGKILL, the kernel sends the postmaster SIGINT, PostgreSQL's fast shutdown. It runs in its
  own session, so a terminal's Ctrl-C or hangup reaches only the daemon, which stops it in
  order. (The death signal belongs to the thread that forks: the server is spawned from the
  event loop's thread, which outlives it, never from a worker thread.)
- A server still running with no owner (left by a pgserver-era daemon, or still in its fast
  shutdown) is stopped before a new one starts, with one warning: never joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from poller.errors import ConfigError, EmbeddedError
from poller.logs import get_logger
from poller.store.sql import queries

QUERIES = queries("embedded")

log = get_logger(__name__)
DATABASE_NAME = "qbo_poller"
LOCK_NAME = "embedded.lock"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0  # fast shutdown, before SIGQUIT (immediate shutdown)
OWNER_WAIT_S = 15.0  # how long a daemon waits for a one-shot command's server to go
RUN_AS = "pgserver"  # PostgreSQL refuses to run as root; pgserver's account, as before
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on the BSDs

# `python -I -S -c _GUARD <parent pid> <uid> <gid> <postgres> <args...>`: drop to the run-as
# account if one is given (uid -1: stay), then ask the kernel for SIGINT when the parent dies
# (prctl 1 = PR_SET_PDEATHSIG; after the drop, which would clear it), make sure the parent has
# not died already, and become postgres. It runs as the daemon's own user, so the interpreter is
# always executable (a root daemon's Python may live where the run-as account cannot reach).
_GUARD = (
    "import ctypes, os, signal, sys\n"
    "parent, uid, gid = (int(arg) for arg in sys.argv[1:4])\n"
    "if uid >= 0:\n"
    "    os.setgroups([]); os.setgid(gid); os.setuid(uid)\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT), 0, 0, 0) != 0:\n"
    "    sys.exit('qbo-poller: prctl(PR_SET_PDEATHSIG) failed')\n"
    "if os.getppid() != parent:\n"
    "    sys.exit(0)\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)


class EmbeddedInUse(ConfigError):
    """Another daemon owns this POLLER_DATA_DIR's server: two daemons never share it."""


def binaries() -> Path:
    """pgserver's bundled PostgreSQL binaries (found without importing pgserver, whose import
    creates runtime folders and warns without XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the embedded PostgreSQL needs the pgserver package (or DATABASE_URL)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path, *, exclusive: bool = False) -> AsyncIterator[str]:
    """Own (start, and stop on exit) or, unless `exclusive`, join the server; yield its DSN."""
    pgdata = (data_dir / "pgdata").resolve()
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a POLLER_DATA_DIR the daemon cannot use: configuration, exit 2
        raise ConfigError(
            f"POLLER_DATA_DIR={str(data_dir)!r}: cannot create {pgdata}: {exc.strerror}"
        ) from None
    lock = Ownership(data_dir / LOCK_NAME)
    if not await _own(lock, data_dir, exclusive):
        yield await _join(pgdata, lock)
        return
    try:
        log.info("embedded_postgres_starting", pgdata=str(pgdata))
        server = await _start(pgdata)
        try:
            await _ensure_database(server.socket_dir)
            log.info("embedded_postgres_ready", pid=server.proc.pid)
            yield server.dsn
        finally:
            await server.stop()
    finally:
        lock.release()


class Ownership:
    """The flock that makes one process the server's owner; its file names the owner."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, role: str) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "role": role, "argv": _argv()}).encode())
        self._fd = fd
        return True

    def holder(self) -> dict[str, object]:
        try:
            found = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.write_text("")
            os.close(self._fd)  # releases the flock
            self._fd = None


def _argv() -> str:
    return " ".join(["qbo-poller", *sys.argv[1:3]])


async def _own(lock: Ownership, data_dir: Path, exclusive: bool) -> bool:
    """True: this process owns the server now. False: another does (join it)."""
    deadline = time.monotonic() + OWNER_WAIT_S
    while not lock.acquire("daemon" if exclusive else "command"):
        holder = lock.holder()
        if not exclusive:
            return False
        if holder.get("role") != "daemon" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # a one-shot command's server: it goes in a moment
            continue
        raise EmbeddedInUse(
            f"POLLER_DATA_DIR={str(data_dir)!r}: its embedded PostgreSQL belongs to another "
            f"running qbo-poller (pid {holder.get('pid', '?')}, {holder.get('argv', '?')}); "
            "stop that one, or give this daemon its own POLLER_DATA_DIR "
            "(several replicas share one server through DATABASE_URL)"
        )
    return True


async def _join(pgdata: Path, lock: Ownership) -> str:
    """The DSN of the server another process owns, once it is ready."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        info = Postmaster.read(pgdata)
        if info is not None and info.ready and _is_postgres_of(info.pid, pgdata):
            log.info("embedded_postgres_joined", owner_pid=lock.holder().get("pid"), pid=info.pid)
            return _dsn(info.socket_dir)
        if time.monotonic() > deadline:
            raise EmbeddedError(f"the embedded PostgreSQL in {pgdata} did not become ready")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Postmaster:
    """What `postmaster.pid` says about a running server."""

    pid: int
    socket_dir: Path
    ready: bool

    @classmethod
    def read(cls, pgdata: Path) -> Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            return cls(int(lines[0]), Path(lines[4].strip()), lines[7].strip() == "ready")
        except (OSError, ValueError, IndexError):
            return None


def _is_postgres_of(pid: int, pgdata: Path) -> bool:
    """Is `pid` a running postmaster of `pgdata` (not a reused pid)?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        Path(argv[0].decode(errors="replace")).name == "postgres" and str(pgdata).encode() in argv
    )


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    socket_dir: Path

    @property
    def dsn(self) -> str:
        return _dsn(self.socket_dir)

    async def wait_ready(self, pgdata: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                raise EmbeddedError(
                    f"the embedded PostgreSQL in {pgdata} exited at start-up (code {code}): "
                    f"{_last_line(pgdata / 'log')}"
                )
            info = Postmaster.read(pgdata)
            if info is not None and info.pid == self.proc.pid and info.ready:
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the embedded PostgreSQL in {pgdata} did not become ready")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Fast shutdown; immediate shutdown if that takes too long; SIGKILL as a last resort."""
        for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 5.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.proc.wait, wait_s)
        if self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        log.info("embedded_postgres_stopped", pid=self.proc.pid)


def _dsn(socket_dir: Path) -> str:
    return f"postgresql://postgres:@/{DATABASE_NAME}?host={socket_dir}"


def _last_line(path: Path) -> str:
    """The server log's reason: its last FATAL or PANIC line (the lines after it are the
    shutdown it caused), else its last line."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    reasons = [line for line in lines if "FATAL:" in line or "PANIC:" in line]
    if reasons:
        return reasons[-1]
    return lines[-1] if lines else "empty log"


async def _start(pgdata: Path) -> Server:
    await _stop_leftover(pgdata)
    user = await asyncio.to_thread(_prepare, pgdata)
    socket_dir = await asyncio.to_thread(_socket_dir, pgdata, user)
    server = Server(_spawn(pgdata, socket_dir, user), socket_dir)  # in this (the loop's) thread
    try:
        await server.wait_ready(pgdata)
    except BaseException:
        await server.stop()
        raise
    return server


def _spawn(pgdata: Path, socket_dir: Path, user: str | None) -> subprocess.Popen[bytes]:
    postgres = [str(binaries() / "postgres"), "-D", str(pgdata), "-h", "", "-k", str(socket_dir)]
    if sys.platform.startswith("linux"):
        entry = pwd.getpwnam(user) if user is not None else None
        ids = (str(entry.pw_uid), str(entry.pw_gid)) if entry is not None else ("-1", "-1")
        argv = [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), *ids, *postgres]
        run_as = None  # the guard drops privileges itself
    else:  # no parent-death signal: the server stops with a graceful exit only
        argv, run_as = postgres, user
    with open(pgdata / "log", "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=run_as,
        )


async def _stop_leftover(pgdata: Path) -> None:
    """A server of this pgdata that nobody owns (see the module doc) is stopped."""
    info = Postmaster.read(pgdata)
    if info is None or not _is_postgres_of(info.pid, pgdata):
        return
    log.warning("embedded_postgres_leftover_stopping", pid=info.pid, pgdata=str(pgdata))
    for sig, wait_s in (
        (signal.SIGINT, STOP_TIMEOUT_S),
        (signal.SIGQUIT, 5.0),
        (signal.SIGKILL, 5.0),
    ):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, sig)
        deadline = time.monotonic() + wait_s
        while _is_postgres_of(info.pid, pgdata) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not _is_postgres_of(info.pid, pgdata):
            return


def _prepare(pgdata: Path) -> str | None:
    """Create and initialise pgdata; the account the server runs as (None: this process's)."""
    pgdata.mkdir(parents=True, exist_ok=True)
    user = _run_as()
    if user is not None:
        entry = pwd.getpwnam(user)
        _open_path_to(pgdata)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(binaries() / "initdb"), "-D", str(pgdata), "-U", "postgres"]
        done = subprocess.run(
            [*initdb, "--auth=trust", "--auth-local=trust", "--encoding=utf8"],
            capture_output=True,
            text=True,
            user=user,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EmbeddedError(f"initdb of the embedded PostgreSQL in {pgdata} failed: {last}")
    return user


def _run_as() -> str | None:
    """As root, PostgreSQL runs as the `pgserver` account (created if missing, as pgserver did)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/false", RUN_AS], check=True, capture_output=True)
    return RUN_AS


def _open_path_to(path: Path) -> None:
    """Let the run-as account traverse to `path` and run the binaries (what pgserver did)."""
    traverse = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for parent in [*path.parents, *binaries().parents]:
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            parent.chmod(mode | traverse)
    for root, dirs, files in os.walk(binaries().parent):
        for name in [*dirs, *files]:
            entry = Path(root, name)
            mode = entry.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & stat.S_IROTH == 0:
                entry.chmod(mode | traverse)


def _fits(folder: Path) -> bool:
    return len(str(folder / ".s.PGSQL.5432")) <= SOCKET_PATH_MAX


def _socket_dir(pgdata: Path, user: str | None) -> Path:
    """pgdata itself, unless its socket path would be too long for a unix socket: then a folder
    of its own in the temporary directory, or in /tmp when TMPDIR is itself too long (macOS's
    per-user TMPDIR, a test's temporary directory)."""
    if _fits(pgdata):
        return pgdata
    digest = hashlib.sha256(f"{pgdata}-{pgdata.stat().st_ino}".encode()).hexdigest()[:12]
    name = f"qbo-poller-{digest}"
    in_tmpdir = Path(tempfile.gettempdir()) / name
    folder = in_tmpdir if _fits(in_tmpdir) else Path("/tmp") / name
    folder.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


async def _ensure_database(socket_dir: Path) -> None:
    conn = await asyncpg.connect(host=str(socket_dir), user="postgres", database="postgres")
    try:
        if not await conn.fetchval(QUERIES["database_exists"], DATABASE_NAME):
            await conn.execute(QUERIES["create_database"])
    finally:
        await conn.close()
