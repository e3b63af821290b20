"""`parley migrate`: roles as the admin, yoyo migrations and then every sql/ file as parley_owner.

Tables change through numbered, never-edited migrations; functions, policies, views and
grants are re-applied from sql/ on every deploy, so they always match the code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql

from pyapp.config import LOGIN_ROLES, OWNER_ROLE, Settings, role_password

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


def _owner_url(admin_url: str) -> str:
    parts = urlsplit(admin_url)
    extra = f"options={quote(f'-c role={OWNER_ROLE} -c search_path={MIGRATION_SCHEMA}')}"
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def ensure_database(admin_url: str) -> None:
    """Create the target database if missing (embedded and fresh test clusters)."""
    dbname = urlsplit(admin_url).path.lstrip("/")
    maint = urlunsplit(urlsplit(admin_url)._replace(path="/postgres"))
    with psycopg.connect(maint, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))


def apply_roles(conn: psycopg.Connection, secret_key: str, dbname: str) -> None:
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
    conn.execute(
        pgsql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(pgsql.Identifier(dbname), pgsql.Identifier(OWNER_ROLE))
    )


def apply_migrations(admin_url: str) -> list[str]:
    from yoyo import get_backend, read_migrations

    backend = get_backend(
        _owner_url(admin_url).replace("postgresql://", "postgresql+psycopg://", 1), migration_table="_yoyo_migration"
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
            applied = apply_migrations(settings.admin_url)
            with conn.transaction():
                apply_sql_files(conn)
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
