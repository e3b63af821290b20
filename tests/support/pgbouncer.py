"""PgBouncer (Debian's `pgbouncer`, installed by scripts/setup.sh --test) in front of the test
PostgreSQL, in transaction mode: a few server connections shared by every client, so one
server connection serves many tenants' transactions in turn. Started as its own process (as
the embedded cluster's system user when run as root: PgBouncer refuses root) and stopped by pid."""
from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

from pyapp.config import role_password

from support.database import SYSTEM_USER
from support.server import TEST_SECRET, free_port


class Bouncer:
    def __init__(self, admin_url: str, roles=("parley_app",), *, pool_size: int = 4, secret: str = TEST_SECRET):
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            raise RuntimeError("pgbouncer is not installed: run scripts/setup.sh --test (apt-get install pgbouncer)")
        target = urlsplit(admin_url)
        self.dbname = target.path.lstrip("/")
        self.port = free_port()
        self.passwords = {role: role_password(secret, role) for role in roles}
        self.dir = Path(tempfile.mkdtemp(prefix="parley-pgbouncer-"))
        (self.dir / "userlist.txt").write_text("".join(f'"{r}" "{p}"\n' for r, p in self.passwords.items()))
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
{self.dbname} = host={target.hostname} port={target.port} dbname={self.dbname}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.dir}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 2000
server_reset_query =
logfile = {self.dir}/pgbouncer.log
""")
        cmd = [binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            for f in self.dir.iterdir():
                os.chown(f, user.pw_uid, user.pw_gid)
            cmd[1:1] = ["-u", SYSTEM_USER]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, role: str = "parley_app") -> str:
        return f"postgresql://{quote(role)}:{quote(self.passwords[role])}@127.0.0.1:{self.port}/{self.dbname}"

    async def ready(self, timeout: float = 15) -> None:
        """Wait until it accepts connections (or fail with its log)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                                   f" {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"pgbouncer did not listen: {self.log()}") from None
                await asyncio.sleep(0.05)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
