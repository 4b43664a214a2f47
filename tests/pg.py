"""A real PostgreSQL server for tests: one throwaway cluster per session, one fresh database per test.

Tests get it as pytest fixtures; a test module (or conftest) opts in with
``from tests.pg import pg_url, postgres_server  # noqa: F401`` or ``pytest_plugins = ["tests.pg"]``.

The server runs as the ``postgres`` user (initdb refuses root), listens on 127.0.0.1 (only, by default), on a free
port, with its socket and data in a temp dir of its own. Every process it starts is stopped by PID
at teardown, whatever the test did to it (killed, halted, paused).

PYTEST_DONT_REWRITE: test modules import PostgresServer from here before pytest_plugins loads this
module; its asserts are internal sanity checks, so pytest need not (and then cannot) rewrite them.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

PG_ROOT = Path("/usr/lib/postgresql")
ROLE = "clusterwatch"
PASSWORD = "pg-test-secret"  # not a word the logs use: the redactor masks it wherever it appears
DATABASE = "clusterwatch"
READY_TIMEOUT = 60.0  # generous: a busy 2-core machine can be slow to start or recover a cluster

_db_names = itertools.count(1)


def find_pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian keeps each major version apart, off PATH)."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for initdb in PG_ROOT.glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version) and os.access(initdb, os.X_OK):
            found.append((tuple(int(p) for p in version.split(".")), initdb.parent))
    return max(found)[1] if found else None


def unavailable_reason() -> str | None:
    """Why a real PostgreSQL cannot run here, or None when it can."""
    if find_pg_bin() is None:
        return f"PostgreSQL is not installed (no {PG_ROOT}/*/bin/initdb; `scripts/bootstrap.sh test` installs it)"
    if os.geteuid() != 0:
        return "the PostgreSQL test server needs root, to run initdb and postgres as the postgres user"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user (Debian's postgresql package creates it)"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is missing"
    return None


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (start() retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(proc: psutil.Process) -> bool:
    """Running, not a zombie: an orphaned postmaster's zombie lingers until PID 1 reaps it."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait (bounded) until none of procs runs; the ones still running are returned."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _kill(procs: list[psutil.Process]) -> None:
    """SIGKILL each one still running; psutil refuses if a PID was reused by another process."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if _alive(p):
                p.send_signal(signal.SIGCONT)  # a stopped process would sit on SIGKILL's effects otherwise
                p.kill()


class PostgresServer:
    """One PostgreSQL cluster in a temp dir, driven the ways a real one fails: killed, halted, hung.

    The postmaster is the process all fault methods act on. Its children (backends, checkpointer,
    WAL writer) are separate processes: after kill9() they notice the postmaster is gone and exit by
    themselves, and while pause()d they keep running, so open connections still work while new
    connections hang. That is how a real hung or crashed postmaster behaves too.
    """

    def __init__(self, listen_addresses: str = "127.0.0.1") -> None:
        """`listen_addresses`: PostgreSQL's own setting; more than loopback only for a test that made the
        other address itself (a bridge to a network namespace) and added its subnet to pg_hba.conf."""
        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        self.bin: Path = find_pg_bin()  # type: ignore[assignment]  # unavailable_reason() checked it
        self.dir: Path | None = None
        self.port: int | None = None
        self.listen_addresses = listen_addresses
        self._postmaster: psutil.Process | None = None
        self._seen: list[psutil.Process] = []  # every server process we saw, to stop by PID at the end

    # -- paths and addresses -------------------------------------------------------------------

    @property
    def data(self) -> Path:
        assert self.dir is not None, "server not started"
        return self.dir / "data"

    @property
    def log(self) -> Path:
        assert self.dir is not None, "server not started"
        return self.dir / "server.log"

    def url(self, db: str = DATABASE) -> str:
        """The URL clusterwatch is configured with: its own role, password and database."""
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int:
        """The postmaster's PID, from the first line of postmaster.pid (as an operator would find it)."""
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """initdb a fresh cluster, start it on a free port, create clusterwatch's role and database."""
        assert self.dir is None, "already started; use start_again() after a kill9() or halt()"
        self.dir = Path(tempfile.mkdtemp(prefix="cw-pg-"))  # short: the Unix socket path has a 107-byte limit
        os.chown(self.dir, pwd.getpwnam("postgres").pw_uid, -1)
        atexit.register(self.stop)  # a session that dies before fixture teardown still stops it
        self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        for attempt in range(3):
            self.port = free_port()
            try:
                self._pg_ctl_start()
                break
            except RuntimeError:
                # Another process may have taken the port between free_port() and the bind.
                if attempt == 2 or "Address already in use" not in self.log.read_text(errors="replace"):
                    raise
        with self.connect_admin() as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        return self

    def start_again(self) -> None:
        """Start the same cluster on the same port after kill9() or halt(); PostgreSQL recovers from its WAL."""
        assert self.dir is not None, "never started"
        if self.running():
            raise RuntimeError(f"postmaster {self._postmaster.pid} is still running")  # type: ignore[union-attr]
        # The old backends must be gone: a new postmaster refuses while they hold the old shared memory.
        left = _wait_gone(self._seen, READY_TIMEOUT)
        _kill(left)
        _wait_gone(left, 10.0)
        # Lock files naming the dead postmaster would stop the new one: postgres takes a PID that is
        # still a zombie (an orphan PID 1 has not reaped yet) for a live server.
        for lock in [self.data / "postmaster.pid", *self.dir.glob(".s.PGSQL.*.lock")]:
            lock.unlink(missing_ok=True)
        self._pg_ctl_start()

    def stop(self) -> None:
        """Stop cleanly if possible, then SIGKILL whatever is left by PID, and remove the temp dir."""
        if self.dir is None:
            return
        self._remember_children()
        self.resume()  # a paused postmaster cannot shut down
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
                self._pg_ctl("stop", "-m", "fast", timeout=30.0)
        _kill(self._seen)
        _wait_gone(self._seen, 10.0)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self._postmaster = None
        self._seen = []

    # -- faults --------------------------------------------------------------------------------

    def kill9(self) -> None:
        """A crashed database: SIGKILL the postmaster; its backends exit on their own soon after."""
        proc = self._require_postmaster()
        self._remember_children()
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        _wait_gone([proc], 10.0)

    def halt(self) -> None:
        """A crash without cleanup: `pg_ctl stop -m immediate` (no checkpoint; start_again() recovers)."""
        self._require_postmaster()
        self._remember_children()
        self.resume()
        self._pg_ctl("stop", "-m", "immediate", timeout=READY_TIMEOUT)

    def pause(self) -> None:
        """A hung database: SIGSTOP the postmaster; new connections hang.

        Its children are NOT stopped, so connections opened before keep working.
        """
        self._require_postmaster().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo pause() (SIGCONT); harmless if not paused or not running."""
        if self._postmaster is not None and _alive(self._postmaster):
            with contextlib.suppress(psutil.Error):
                self._postmaster.send_signal(signal.SIGCONT)

    def running(self) -> bool:
        """Whether the postmaster process is alive (it may still be paused)."""
        return self._postmaster is not None and _alive(self._postmaster)

    def ensure_running(self) -> None:
        """Bring the shared server back if an earlier test left it paused, killed or halted."""
        self.resume()
        if not self.running():
            self.start_again()

    # -- databases -----------------------------------------------------------------------------

    def connect_admin(self, db: str = "postgres"):  # -> psycopg.Connection, imported lazily
        """A superuser connection (trust auth over TCP on 127.0.0.1), in autocommit for DDL."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=db, autocommit=True, connect_timeout=10
        )

    def create_database(self, name: str) -> str:
        """A fresh empty database owned by clusterwatch; returns the URL to reach it as clusterwatch."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _ (at most 63)")
        with self.connect_admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a test's database, disconnecting whoever is still in it."""
        with self.connect_admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    # -- internals -----------------------------------------------------------------------------

    def _as_postgres(self, tool: str, *args: str, timeout: float = 120.0) -> str:
        """Run a PostgreSQL tool as the postgres user, from a cwd it can read (initdb checks it)."""
        assert self.dir is not None
        cmd = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args]
        res = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=timeout, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res.stdout

    def _pg_ctl(self, action: str, *args: str, timeout: float) -> None:
        """pg_ctl waiting (-w, bounded by -t) until the start or stop is done."""
        wait = ("-w", "-t", str(int(timeout)))
        self._as_postgres("pg_ctl", action, "-D", str(self.data), *wait, *args, timeout=timeout + 30)

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={self.listen_addresses}"
            " -c fsync=off -c max_connections=200"  # fsync=off: test speed; kill -9 of postgres loses nothing
        )
        try:
            # -l sends the postmaster's output to a file, so it holds none of our pipes open.
            self._pg_ctl("start", "-l", str(self.log), "-o", options, timeout=READY_TIMEOUT)
        except (RuntimeError, subprocess.SubprocessError) as e:
            self._track_postmaster()  # it may have started after all: remember it so stop() kills it
            raise RuntimeError(f"{e}\nserver log:\n{self._log_tail()}") from e
        self._track_postmaster()
        self._wait_accepting()

    def _track_postmaster(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except (FileNotFoundError, IndexError, ValueError, psutil.Error):
            return
        self._postmaster = proc
        self._seen.append(proc)

    def _remember_children(self) -> None:
        if self._postmaster is not None and _alive(self._postmaster):
            with contextlib.suppress(psutil.Error):
                known = {p.pid for p in self._seen}
                self._seen.extend(c for c in self._postmaster.children(recursive=True) if c.pid not in known)

    def _require_postmaster(self) -> psutil.Process:
        if self._postmaster is None or not _alive(self._postmaster):
            raise RuntimeError("the postmaster is not running")
        return self._postmaster

    def _wait_accepting(self) -> None:
        """pg_ctl -w saw the server ready; wait (bounded) until a TCP login works too."""
        import psycopg

        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with self.connect_admin() as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    why = f"PostgreSQL did not accept connections in {READY_TIMEOUT:.0f}s"
                    raise RuntimeError(f"{why}:\n{self._log_tail()}") from None
                time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@contextlib.contextmanager
def running_server(listen_addresses: str = "127.0.0.1") -> Iterator[PostgresServer]:
    """A PostgreSQL of the caller's own (a session's, or a module's that halts or partitions it),
    stopped by PID at the end; skipped where it cannot run (see unavailable_reason)."""
    server = PostgresServer(listen_addresses)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def fresh_database(server: PostgresServer, prefix: str = "t") -> Iterator[str]:
    """A new database owned by clusterwatch; its URL. Dropped afterwards, even if the test left the
    server down (it is started again first)."""
    server.ensure_running()
    name = f"{prefix}{os.getpid()}_{next(_db_names)}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):  # stop() cleans up anyway
            server.ensure_running()
            server.drop_database(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session."""
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for this test, owned by clusterwatch; its URL. Dropped afterwards."""
    with fresh_database(postgres_server) as url:
        yield url
