"""`parley migrate`: roles as the admin, yoyo migrations and then every sql/ file as parley_owner.

Tables change through numbered, never-edited migrations; functions, policies, views and
grants are re-applied from sql/ on every deploy, so they always match the code.

A deploy runs while traffic does: re-applying what already is so takes no table lock (sql/
declares policies through parley.ensure_policy), and whatever must lock a table waits at most
`migrate_lock_timeout` seconds (lock_timeout) before that step is rolled back and tried again, up
to `migrate_lock_attempts` times, so requests never queue behind a migrate stuck behind a long
transaction for longer than that.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql

from pyapp.config import LOGIN_ROLES, OWNER_ROLE, Settings, role_password

log = logging.getLogger("parley.migrate")
T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ROOT / "migrations"
SQL_DIR = ROOT / "sql"
ROLES_FILE = "00_roles.sql"
MIGRATION_SCHEMA = "parley_migrations"
# Tables created ahead by month; migrate keeps a few months of partitions in place.
PARTITIONED_TABLES_QUERY = """
  SELECT c.oid::regclass::text FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'parley' AND p.partstrat = 'r'
"""


def sql_files() -> list[Path]:
    return sorted(p for p in SQL_DIR.glob("*.sql") if p.name != ROLES_FILE)


def schema_fingerprint() -> str:
    """Hash of every migration and sql/ file: the schema version the code expects."""
    digest = hashlib.sha256()
    for path in [*sorted(MIGRATIONS_DIR.glob("*.sql")), SQL_DIR / ROLES_FILE, *sql_files()]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class MigrateLockTimeout(RuntimeError):
    """`parley migrate` gave up: a table lock it needs stayed held by other sessions."""


# Sessions in a transaction for longer than the lock timeout: who a migrate that gave up waited for.
LONG_TRANSACTIONS_QUERY = """
  SELECT pid, usename, application_name, state, round(extract(epoch FROM now() - xact_start))::int, left(query, 120)
    FROM pg_stat_activity
   WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start < now() - make_interval(secs => %s)
   ORDER BY xact_start
"""


def _lock_wait(exc: psycopg.Error) -> str:
    """What waited: the message, the statement (PL/pgSQL context) and the sql/ file."""
    context = (exc.diag.context or "").split("\n", 1)[0]
    return "; ".join(part for part in [exc.diag.message_primary, context, *getattr(exc, "__notes__", [])] if part)


def _lock_timeout_ms(settings: Settings) -> int:
    return max(1, round(settings.migrate_lock_timeout * 1000))


def _long_transactions(conn: psycopg.Connection, seconds: float) -> str:
    rows = conn.execute(LONG_TRANSACTIONS_QUERY, (seconds,)).fetchall()
    return "; ".join(
        f"pid {pid} ({user}, {app or 'no application_name'}, {state}, in a transaction for {age} s: {query})"
        for pid, user, app, state, age, query in rows
    )


def with_lock_retries(conn: psycopg.Connection, settings: Settings, what: str, step: Callable[[], T]) -> T:
    """Run `step` (one transaction, or steps that each roll back on error), again when a statement of
    it waited longer than lock_timeout for a lock; raise MigrateLockTimeout naming the long
    transactions after migrate_lock_attempts tries. Between tries the requests that queued behind
    the lock run: the pause is as long as a try may wait."""
    attempts = max(1, settings.migrate_lock_attempts)
    attempt = 1
    while True:
        try:
            return step()
        except psycopg.errors.LockNotAvailable as exc:
            waited = _lock_wait(exc)
            log.warning(
                "%s: lock wait over %s s (try %d of %d): %s",
                what,
                settings.migrate_lock_timeout,
                attempt,
                attempts,
                waited,
            )
            if attempt >= attempts:
                raise MigrateLockTimeout(
                    f"{what}: gave up after {attempts} tries, each waiting at most {settings.migrate_lock_timeout} s "
                    f"for a table lock ({waited}); what the last try had not committed was rolled back. "
                    f"Long transactions: {_long_transactions(conn, settings.migrate_lock_timeout) or 'none left now'}. "
                    "End them or run it again later (PARLEY_MIGRATE_LOCK_TIMEOUT, PARLEY_MIGRATE_LOCK_ATTEMPTS)."
                ) from exc
        time.sleep(settings.migrate_lock_timeout)
        attempt += 1


def _owner_url(admin_url: str, lock_timeout_ms: int | None = None) -> str:
    parts = urlsplit(admin_url)
    options = f"-c role={OWNER_ROLE} -c search_path={MIGRATION_SCHEMA}"
    if lock_timeout_ms is not None:
        options += f" -c lock_timeout={lock_timeout_ms}"
    extra = f"options={quote(options)}"
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def ensure_database(admin_url: str) -> None:
    """Create the target database if missing (embedded and fresh test clusters)."""
    dbname = urlsplit(admin_url).path.lstrip("/")
    maint = urlunsplit(urlsplit(admin_url)._replace(path="/postgres"))
    with psycopg.connect(maint, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))


ROLE_TRIES = 5  # apply_roles against another database's migrate on the same PostgreSQL


def apply_roles(conn: psycopg.Connection, secret_key: str, dbname: str) -> None:
    """The roles (sql/00_roles.sql), the login roles' passwords and the database's grants, on an autocommit
    connection. The roles are the cluster's: another database's migrate re-asserts them too, and an
    ALTER ROLE that waited for its commit fails with "tuple concurrently updated" (PostgreSQL updates a
    catalog row without locking it first). Every step here is idempotent, so they are run again."""
    for attempt in range(1, ROLE_TRIES + 1):
        try:
            return _apply_roles(conn, secret_key, dbname)
        except psycopg.errors.InternalError_ as exc:
            if "tuple concurrently updated" not in str(exc) or attempt == ROLE_TRIES:
                raise
            log.warning("roles: updated by another migrate meanwhile (try %d of %d)", attempt, ROLE_TRIES)
            time.sleep(0.1 * attempt)


def _apply_roles(conn: psycopg.Connection, secret_key: str, dbname: str) -> None:
    conn.execute((SQL_DIR / ROLES_FILE).read_text())
    for role in LOGIN_ROLES:
        conn.execute(
            pgsql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                pgsql.Identifier(role), pgsql.Literal(role_password(secret_key, role))
            )
        )
    conn.execute(
        pgsql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
            pgsql.Identifier(dbname), pgsql.SQL(", ").join(pgsql.Identifier(r) for r in LOGIN_ROLES)
        )
    )
    conn.execute(pgsql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(pgsql.Identifier(dbname)))
    conn.execute(
        pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
            pgsql.Identifier(MIGRATION_SCHEMA), pgsql.Identifier(OWNER_ROLE)
        )
    )
    # TEMPORARY: parley.ensure_policy compares a policy with the declared one built on a scratch table.
    conn.execute(
        pgsql.SQL("GRANT CREATE, TEMPORARY ON DATABASE {} TO {}").format(
            pgsql.Identifier(dbname), pgsql.Identifier(OWNER_ROLE)
        )
    )


def applied_migrations(conn: psycopg.Connection) -> set[str]:
    """Ids of the migrations yoyo has recorded (none on a fresh database)."""
    table = f"{MIGRATION_SCHEMA}._yoyo_migration"
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchall()[0][0]:
        return set()
    return {row[0] for row in conn.execute(f"SELECT migration_id FROM {table}")}


def apply_migrations(admin_url: str, lock_timeout_ms: int | None = None) -> list[str]:
    from yoyo import get_backend, read_migrations

    backend = get_backend(
        _owner_url(admin_url, lock_timeout_ms).replace("postgresql://", "postgresql+psycopg://", 1),
        migration_table="_yoyo_migration",
    )
    migrations = read_migrations(str(MIGRATIONS_DIR))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()  # a lingering session would block CREATE DATABASE ... TEMPLATE
    return [m.id for m in pending]


def apply_sql_files(conn: psycopg.Connection) -> None:
    conn.execute(f"SET ROLE {OWNER_ROLE}")
    conn.execute("SET search_path = parley, public")
    for path in sql_files():
        try:
            conn.execute(path.read_text())
        except psycopg.errors.LockNotAvailable as exc:
            exc.add_note(f"in sql/{path.name}")
            raise  # with_lock_retries tries again
        except psycopg.Error as exc:
            raise RuntimeError(f"{path.name}: {exc}") from exc
    for (table,) in conn.execute(PARTITIONED_TABLES_QUERY).fetchall():
        conn.execute("SELECT parley.ensure_monthly_partitions(%s::regclass, 3)", (table,))
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATION_SCHEMA}.schema_state (id int PRIMARY KEY CHECK (id = 1), fingerprint text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        f"INSERT INTO {MIGRATION_SCHEMA}.schema_state (id, fingerprint) VALUES (1, %s) "
        "ON CONFLICT (id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, applied_at = now()",
        (schema_fingerprint(),),
    )
    conn.execute(f"GRANT USAGE ON SCHEMA {MIGRATION_SCHEMA} TO parley_app, parley_jobs")
    conn.execute(f"GRANT SELECT ON {MIGRATION_SCHEMA}.schema_state TO parley_app, parley_jobs")
    conn.execute("RESET ROLE")


def migrate(settings: Settings) -> list[str]:
    """Bring the database to the code's schema. Idempotent: a second run changes nothing."""
    ensure_database(settings.admin_url)
    dbname = urlsplit(settings.admin_url).path.lstrip("/")
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        # One migrator at a time per database, whatever else runs.
        conn.execute("SELECT pg_advisory_lock(7261001)")
        try:
            apply_roles(conn, settings.secret_key, dbname)
            timeout_ms = _lock_timeout_ms(settings)
            before = applied_migrations(conn)  # a try that gave up may have applied some already
            with_lock_retries(conn, settings, "migrations", lambda: apply_migrations(settings.admin_url, timeout_ms))
            applied = sorted(applied_migrations(conn) - before)
            conn.execute(pgsql.SQL("SET lock_timeout = {}").format(pgsql.Literal(timeout_ms)))

            def sql_step() -> None:
                with conn.transaction():
                    apply_sql_files(conn)

            with_lock_retries(conn, settings, "sql/", sql_step)
            conn.execute("RESET lock_timeout")
        finally:
            conn.execute("SELECT pg_advisory_unlock(7261001)")
    return applied


def schema_status(conn_fingerprint: str | None) -> tuple[bool, str]:
    expected = schema_fingerprint()
    if conn_fingerprint is None:
        return False, "database has no Parley schema: run `parley migrate`"
    if conn_fingerprint != expected:
        return False, "database schema is behind the code: run `parley migrate`"
    return True, "current"
