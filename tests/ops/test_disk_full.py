"""The disk under the messages full (SQLSTATE 53100), simulated honestly: the messages' partitions
are moved to a tablespace on a 1 MiB tmpfs, which rows of random text then fill. A visitor's
message is refused with the database_unavailable error frame and a 1013 close (retry), an agent's
REST reply with 503 database_unavailable; once there is room again the same server takes both, and
the visitor's resend under its client id is stored once. Needs root (mount) and the run's own
PostgreSQL; skipped otherwise."""
import os
import pwd
import secrets
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
from pyapp.client import ParleyError
from support.database import SYSTEM_USER
from support.realtime import create_chatbot, visitor, widget_session

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def tiny_tablespace(pg_server, owner_conn):
    """A tablespace on a fresh 1 MiB tmpfs; dropped and unmounted after the test."""
    if not getattr(pg_server, "datadir", None) or os.geteuid() != 0:
        pytest.skip("needs root (mount) and the run's own PostgreSQL")
    where = ROOT / ".parley" / f"tiny-{os.getpid()}-{secrets.token_hex(3)}"
    where.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    user = pwd.getpwnam(SYSTEM_USER)
    os.chown(where, user.pw_uid, user.pw_gid)
    name = f"tiny_{secrets.token_hex(3)}"
    try:
        await owner_conn.execute(f"CREATE TABLESPACE {name} LOCATION '{where}'")
        yield name
    finally:
        try:
            await owner_conn.execute(f"DROP TABLESPACE IF EXISTS {name}")
        finally:
            subprocess.run(["umount", str(where)], check=False)
            where.rmdir()


async def _message_partitions(owner_conn) -> list[str]:
    return [r["part"] for r in await owner_conn.fetch(
        "SELECT inhrelid::regclass::text AS part FROM pg_inherits WHERE inhparent = 'parley.messages'::regclass")]


async def _move(owner_conn, partitions: list[str], tablespace: str) -> None:
    for part in partitions:
        await owner_conn.execute(f"ALTER TABLE {part} SET TABLESPACE {tablespace}")


async def test_a_full_disk_is_an_outage_the_clients_wait_out(server, signup, owner_conn, tiny_tablespace):
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    sess = await widget_session(server, bot["key"])
    conv = uuid.UUID(sess["conversation_id"])
    status, body = await server.call("POST", f"/api/conversations/{conv}/claim", token=owner["access_token"])
    assert status == 200, body
    vis = await visitor(server, sess)
    partitions = await _message_partitions(owner_conn)
    await _move(owner_conn, partitions, tiny_tablespace)
    try:
        # Fill the tmpfs with rows no compression can shrink until PostgreSQL says it is full, then the
        # room left in its pages with smaller ones, down to the size of a visitor's message.
        for md5s in (400, 8, 1):
            with pytest.raises(asyncpg.DiskFullError):
                for _ in range(100_000):
                    await owner_conn.execute(
                        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body)"
                        " SELECT $1, $2, 'bot', string_agg(md5(random()::text), '') FROM generate_series(1, $3)",
                        uuid.UUID(owner["tenant_id"]), conv, md5s)

        await vis.send({"type": "message", "client_id": "c-full", "body": "is anyone there?"})
        assert (await vis.expect(type="error"))["code"] == "database_unavailable"
        assert await vis.expect_closed() == 1013
        with pytest.raises(ParleyError) as err:
            await server.client(owner["access_token"]).reply(conv, body={"body": "We are here."})
        assert (err.value.status, err.value.code, err.value.retry_after) == (503, "database_unavailable", 5)
    finally:
        await _move(owner_conn, partitions, "pg_default")  # room again

    again = await visitor(server, sess)
    try:
        await again.send({"type": "message", "client_id": "c-full", "body": "is anyone there?"})
        assert (await again.expect_message("is anyone there?", author="visitor"))["client_id"] == "c-full"
    finally:
        await again.close()
    await server.client(owner["access_token"]).reply(conv, body={"body": "We are here."})
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.messages WHERE client_id = 'c-full'") == 1
