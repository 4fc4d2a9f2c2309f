"""A PostgreSQL primary with a streaming standby on this machine, for drills that take the
database writer away: each server its own process on a free port, in a temporary data
directory (a kill takes the postmaster and every backend at once, as losing the machine
would); the standby synchronous or asynchronous.

    async with replica_pair(synchronous=True) as pair:
        url = pair.writer_url("marketplace")   # both hosts, target_session_attrs=read-write
        pair.primary.kill()                    # SIGKILL, no shutdown checkpoint
        await pair.standby.promote()           # pg_ctl promote: the standby is the writer

Durability is never traded for speed: fsync, full_page_writes and synchronous_commit stay on,
and with `synchronous=True` a commit returns only once the standby has flushed it. The servers
are started from the embedded PostgreSQL's binaries (pgserver) unless `bin_dir` names others
(e.g. /usr/lib/postgresql/15/bin); as root they run as the `postgres` user (PostgreSQL refuses
to run as root).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg  # type: ignore[import-untyped]
import psutil

from local_supervisor.embedded import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
STANDBY_NAME = "standby"  # its application_name, which synchronous_standby_names lists
SERVER_USER = "postgres"  # the system user the servers run as when we are root
READY_WITHIN = 60.0  # seconds a server gets to accept connections
STOP_WITHIN = 30.0  # seconds a fast shutdown gets before the server is killed

# Settings of every server, primary or standby: durable, reachable over TCP only, room for a
# whole stack's pools. The standby inherits the primary's configuration files through
# pg_basebackup, so per-server settings go on the command line instead.
_COMMON_SETTINGS: Mapping[str, str] = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "hot_standby": "on",
    "max_connections": "400",
    "logging_collector": "off",
}


def embedded_bin_dir() -> Path:
    """Where the embedded PostgreSQL's binaries are (found without importing pgserver, which
    does work at import time)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("pgserver is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def server_user() -> str | None:
    """The system user to run the servers as: None (ourselves) unless we are root."""
    return SERVER_USER if os.geteuid() == 0 else None


def writer_endpoint(ports: Sequence[int], database: str) -> str:
    """A libpq-style URL that follows the writer: every host, tried in order, and only a
    server that takes writes is kept (`target_session_attrs=read-write`). Hosts and ports as
    comma lists in the query, the one form libpq, asyncpg and SQLAlchemy's asyncpg dialect
    all read."""
    hosts = ",".join(HOST for _ in ports)
    port_list = ",".join(str(port) for port in ports)
    return (
        f"postgresql://{SUPERUSER}@/{database}"
        f"?host={hosts}&port={port_list}&target_session_attrs=read-write"
    )


@dataclass
class PostgresServer:
    """One PostgreSQL server process on `port`, its data in `data_dir`, its log beside it."""

    name: str
    data_dir: Path
    port: int
    bin_dir: Path
    settings: Mapping[str, str]
    user: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """The server's stderr (its log)."""
        return self.data_dir.parent / f"{self.name}.log"

    @property
    def running(self) -> bool:
        """Whether its postmaster is alive."""
        return self.process is not None and self.process.poll() is None

    def url(self, database: str = "postgres") -> str:
        """A URL of this server alone."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def tool(self, name: str) -> str:
        """The path of one of the PostgreSQL binaries the server runs from."""
        return str(self.bin_dir / name)

    async def start(self, *, within: float = READY_WITHIN) -> None:
        """Start the postmaster (crash recovery first, if it was killed) and wait until it
        accepts connections."""
        if self.running:
            return
        argv = [self.tool("postgres"), "-D", str(self.data_dir), "-c", f"port={self.port}"]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        self._log = self.log_path.open("ab")
        self.process = await asyncio.to_thread(_spawn, argv, self._log, self.user)
        await self.wait_accepting(within=within)

    async def wait_accepting(self, *, within: float = READY_WITHIN) -> None:
        """Return once the server accepts connections (a standby: once it is consistent)."""
        deadline = time.monotonic() + within
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited; its log:\n{self.log_tail()}")
            try:
                connection = await asyncpg.connect(self.url(), timeout=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.name} did not accept connections within {within:g}s; its log:"
                        f"\n{self.log_tail()}"
                    ) from None
                await asyncio.sleep(0.1)
            else:
                await connection.close()
                return

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once: no shutdown, no checkpoint, and no
        backend left to finish a commit. Each backend leads a process group of its own (the
        postmaster's children call setsid), so they are frozen first, the postmaster before its
        children so it forks no more, then all killed."""
        if self.process is None:
            return
        victims = []
        with contextlib.suppress(psutil.NoSuchProcess):
            postmaster = psutil.Process(self.process.pid)
            postmaster.send_signal(signal.SIGSTOP)
            victims = [postmaster, *postmaster.children(recursive=True)]
        for victim in victims[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGSTOP)
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)
        self.process.wait()
        psutil.wait_procs(victims[1:], timeout=10)
        self._close_log()

    async def promote(self) -> None:
        """Promote a standby (pg_ctl promote, which waits until it takes writes)."""
        await asyncio.to_thread(
            _run, [self.tool("pg_ctl"), "promote", "-w", "-t", "60", "-D", str(self.data_dir)],
            user=self.user,
        )  # fmt: skip

    async def stop(self) -> None:
        """A fast shutdown (SIGINT); killed if it takes longer than STOP_WITHIN."""
        if self.process is None:
            return
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self.process.wait, STOP_WITHIN)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class ReplicaPair:
    """A primary and (unless there is none) its streaming standby."""

    primary: PostgresServer
    standby: PostgresServer | None
    synchronous: bool

    @property
    def servers(self) -> list[PostgresServer]:
        """The primary, then the standby if there is one."""
        return [self.primary] + ([self.standby] if self.standby is not None else [])

    def writer_url(self, database: str) -> str:
        """The endpoint that follows the writer over both servers (what services are given)."""
        return writer_endpoint([server.port for server in self.servers], database)

    async def create_database(self, name: str) -> None:
        """Create a database on the primary (the standby receives it through the WAL)."""
        connection = await asyncpg.connect(self.primary.url())
        try:
            quoted = '"' + name.replace('"', '""') + '"'
            await connection.execute(f"CREATE DATABASE {quoted}")
        finally:
            await connection.close()

    async def wait_streaming(self, *, within: float = READY_WITHIN) -> None:
        """Return once the primary sees the standby streaming (and, if synchronous, as its
        synchronous standby)."""
        if self.standby is None:
            return
        wanted = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + within
        connection = await asyncpg.connect(self.primary.url())
        try:
            while True:
                state = await connection.fetchrow(
                    "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
                    STANDBY_NAME,
                )
                if state is not None and (state["state"], state["sync_state"]) == (
                    "streaming",
                    wanted,
                ):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby is not streaming ({wanted}): {state}")
                await asyncio.sleep(0.1)
        finally:
            await connection.close()

    async def wait_replayed(self, *, within: float = READY_WITHIN) -> None:
        """Return once the standby has replayed everything the primary wrote so far (a
        synchronous commit waits for the standby's flush, not for its replay)."""
        if self.standby is None:
            return
        primary = await asyncpg.connect(self.primary.url())
        standby = await asyncpg.connect(self.standby.url())
        try:
            written = await primary.fetchval("SELECT pg_current_wal_lsn()")
            deadline = time.monotonic() + within
            while True:
                behind = await standby.fetchval(
                    "SELECT pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn())", written
                )
                if behind <= 0:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby is {behind} bytes behind after {within:g}s")
                await asyncio.sleep(0.05)
        finally:
            await primary.close()
            await standby.close()


@asynccontextmanager
async def replica_pair(
    *,
    synchronous: bool = True,
    standby: bool = True,
    bin_dir: Path | None = None,
    keep: bool = False,
) -> AsyncIterator[ReplicaPair]:
    """A primary (and a standby streaming from it, synchronous or not) for the block, in a
    temporary directory removed afterwards unless `keep`; every server is stopped at the end."""
    bin_dir = bin_dir or embedded_bin_dir()
    user = server_user()
    root = Path(tempfile.mkdtemp(prefix="pg-pair-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    primary_settings = dict(_COMMON_SETTINGS)
    primary_settings["synchronous_standby_names"] = STANDBY_NAME if standby and synchronous else ""
    primary = PostgresServer("primary", root / "primary", free_port(HOST), bin_dir,
                             primary_settings, user)  # fmt: skip
    replica: PostgresServer | None = None
    try:
        await asyncio.to_thread(_initdb, primary)
        await primary.start()
        if standby:
            # A promoted standby has no standby of its own: it must not wait for one.
            standby_settings = dict(_COMMON_SETTINGS, synchronous_standby_names="")
            replica = PostgresServer("standby", root / "standby", free_port(HOST), bin_dir,
                                     standby_settings, user)  # fmt: skip
            await asyncio.to_thread(_base_backup, primary, replica)
            await replica.start()
        pair = ReplicaPair(primary, replica, synchronous)
        await pair.wait_streaming()
        yield pair
    finally:
        for server in (replica, primary):
            if server is not None:
                await server.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _spawn(argv: list[str], log: IO[bytes], user: str | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        user=user,
        start_new_session=True,  # its own process group: kill() takes every backend
    )


def _run(argv: list[str], *, user: str | None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, user=user, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")


def _initdb(server: PostgresServer) -> None:
    _run(
        [server.tool("initdb"), "-D", str(server.data_dir), "-U", SUPERUSER, "--auth=trust",
         "--encoding=UTF8", "--locale=C"],
        user=server.user,
    )  # fmt: skip
    # Trust for replication connections over TCP too (initdb's default lists them already on
    # most builds; appending is harmless when it does).
    with (server.data_dir / "pg_hba.conf").open("a") as hba:
        hba.write(f"host replication all {HOST}/32 trust\n")


def _base_backup(primary: PostgresServer, standby: PostgresServer) -> None:
    """Copy the primary into the standby's data directory and make it a streaming standby."""
    _run(
        [primary.tool("pg_basebackup"), "-h", HOST, "-p", str(primary.port), "-U", SUPERUSER,
         "-D", str(standby.data_dir), "-X", "stream", "--checkpoint=fast"],
        user=standby.user,
    )  # fmt: skip
    conninfo = f"host={HOST} port={primary.port} user={SUPERUSER} application_name={STANDBY_NAME}"
    with (standby.data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"primary_conninfo = '{conninfo}'\n")
    (standby.data_dir / "standby.signal").touch()
    if standby.user is not None:
        entry = pwd.getpwnam(standby.user)
        for path in (
            standby.data_dir / "postgresql.auto.conf",
            standby.data_dir / "standby.signal",
        ):
            os.chown(path, entry.pw_uid, entry.pw_gid)
