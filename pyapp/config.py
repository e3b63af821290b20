"""Settings read once from the environment; embedded mode fills the gaps from ./.parley/."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

APP_ROLE = "parley_app"
JOBS_ROLE = "parley_jobs"
ANALYST_ROLE = "parley_analyst"
OWNER_ROLE = "parley_owner"
LOGIN_ROLES = (APP_ROLE, JOBS_ROLE, ANALYST_ROLE)


def data_dir() -> Path:
    return Path(os.environ.get("PARLEY_DATA_DIR", ".parley")).resolve()


def _read_or_create_secret(path: Path) -> str:
    """A per-installation secret kept beside the embedded cluster, so dev setups need no config."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def role_password(secret_key: str, role: str) -> str:
    """Login roles get passwords derived from the secret key: one secret to deploy, none stored twice."""
    return hmac.new(secret_key.encode(), f"db-role:{role}".encode(), hashlib.sha256).hexdigest()


def url_for_role(admin_url: str, role: str, password: str, dbname: str | None = None) -> str:
    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(role)}:{quote(password)}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    path = f"/{dbname}" if dbname else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


@dataclass
class Settings:
    """Everything the processes need; built by `load_settings`, overridable in tests."""

    admin_url: str  # schema owner / superuser connection: migrations only
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    embedded: bool = True
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 86400
    max_body_bytes: int = 1_048_576
    # `parley migrate`: how long one statement may wait for a table lock, and how many tries.
    migrate_lock_timeout: float = 5.0
    migrate_lock_attempts: int = 5
    extra: dict = field(default_factory=dict)

    def role_url(self, role: str) -> str:
        override = os.environ.get(f"PARLEY_{role.upper()}_DATABASE_URL")
        if override:
            return override
        return url_for_role(self.admin_url, role, role_password(self.secret_key, role))

    @property
    def app_url(self) -> str:
        return self.role_url(APP_ROLE)

    @property
    def jobs_url(self) -> str:
        return self.role_url(JOBS_ROLE)

    @property
    def listen_url(self) -> str:
        """The server relay's LISTEN connection: PARLEY_LISTEN_URL, a direct connection to PostgreSQL
        (as parley_app) when the pool goes through a transaction pooler such as PgBouncer, which
        cannot carry LISTEN; by default the app's own URL."""
        return os.environ.get("PARLEY_LISTEN_URL") or self.app_url

    @property
    def pool_sessions_own(self) -> bool:
        """Whether the app pool's connections are PostgreSQL sessions of their own, so that a setting
        given when one opens holds for every transaction on it: no transaction pooler between, which
        is when PARLEY_LISTEN_URL is unset or the pool's own URL (a pooler needs a direct one)."""
        return self.listen_url == self.app_url

    @property
    def jobs_listen_url(self) -> str:
        """The jobs process's LISTEN connection (outbox wake-ups): PARLEY_JOBS_LISTEN_URL, else the jobs URL."""
        return os.environ.get("PARLEY_JOBS_LISTEN_URL") or self.jobs_url

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def db_statement_cache() -> int:
    """asyncpg's prepared-statement cache per connection (PARLEY_DB_STATEMENT_CACHE, default 100).
    0 behind PgBouncer < 1.21 in transaction mode: a named statement prepared on one server
    connection is unknown on the next (1.21+ with max_prepared_statements keeps them)."""
    return int(os.environ.get("PARLEY_DB_STATEMENT_CACHE") or 100)


def db_acquire_timeout() -> float:
    """Seconds a request waits for a pooled connection while every one is in use before it is
    answered 503 database_busy (PARLEY_DB_ACQUIRE_TIMEOUT, default 10)."""
    return float(os.environ.get("PARLEY_DB_ACQUIRE_TIMEOUT") or 10)


def _seconds(name: str) -> float | None:
    """A positive number of seconds from the environment variable ``name`` (unset: None)."""
    value = os.environ.get(name)
    if not value:
        return None
    seconds = float(value)
    if not seconds > 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return seconds


def load_settings(*, start_embedded: bool = True, host: str | None = None, port: int | None = None) -> Settings:
    """Use DATABASE_URL when given (never start a server then); otherwise the embedded cluster."""
    ddir = data_dir()
    secret = os.environ.get("PARLEY_SECRET_KEY") or _read_or_create_secret(ddir / "secret_key")
    url = os.environ.get("DATABASE_URL")
    embedded = not url
    if not url:
        from pyapp.embedded import EmbeddedCluster

        cluster = EmbeddedCluster(ddir)
        if start_embedded:
            cluster.start()
        url = cluster.admin_url("parley")
    return Settings(
        admin_url=url,
        secret_key=secret,
        host=host or os.environ.get("PARLEY_HOST", "127.0.0.1"),
        port=int(port or os.environ.get("PARLEY_PORT", "8080")),
        public_url=os.environ.get("PARLEY_PUBLIC_URL", ""),
        embedded=embedded,
        migrate_lock_timeout=float(os.environ.get("PARLEY_MIGRATE_LOCK_TIMEOUT") or Settings.migrate_lock_timeout),
        migrate_lock_attempts=int(os.environ.get("PARLEY_MIGRATE_LOCK_ATTEMPTS") or Settings.migrate_lock_attempts),
        extra={
            "trust_proxy": os.environ.get("PARLEY_TRUST_PROXY", "").lower() in ("1", "true", "yes"),
            # Load the embedding model at start, in the background; /readyz waits for it.
            "embed_warm": os.environ.get("PARLEY_EMBED_WARM", "1").lower() in ("1", "true", "yes"),
            # /metrics: a bearer token for the main listener, and/or a listener of its own (host:port).
            "metrics_token": os.environ.get("PARLEY_METRICS_TOKEN") or None,
            "metrics_bind": os.environ.get("PARLEY_METRICS_BIND") or None,
            "jobs_metrics_bind": os.environ.get("PARLEY_JOBS_METRICS_BIND") or None,
            "db_pool_size": int(os.environ["PARLEY_DB_POOL_SIZE"]) if os.environ.get("PARLEY_DB_POOL_SIZE") else None,
            # Seconds a model's answer may go without text once it has begun (pyapp.providers.llm, default 20).
            "llm_idle_timeout": _seconds("PARLEY_LLM_IDLE_TIMEOUT"),
            # Seconds between a server's looks for bot turns whose server died (pyapp.widget.turns, default 2).
            "bot_turn_pick_every": _seconds("PARLEY_BOT_TURN_PICK_EVERY"),
            # Connections in all before new ones get 503 server_busy (default: the open-files limit less 320 or a tenth).
            "max_connections": int(os.environ.get("PARLEY_MAX_CONNECTIONS") or 0),
        },
    )
