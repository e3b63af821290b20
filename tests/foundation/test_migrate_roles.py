"""`parley migrate` beside another database's migrate on the same PostgreSQL: the login roles are the
cluster's, and both re-assert them. An ALTER ROLE that waited for the other one's commit fails with
"tuple concurrently updated" (PostgreSQL updates catalog rows without a lock); migrate tries again."""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import psycopg
from pyapp.config import LOGIN_ROLES
from pyapp.migrate import migrate
from support.waits import blocked_on_lock


async def test_migrate_outlasts_another_databases_role_update(settings, owner_conn):
    role = LOGIN_ROLES[0]
    with psycopg.connect(settings.admin_url) as other:  # another database's migrate, in its transaction
        other.execute(f'ALTER ROLE "{role}" NOSUPERUSER')
        running = asyncio.create_task(asyncio.to_thread(migrate, settings))
        # This migrate's ALTER ROLE waits for the other transaction's row version of the role...
        await blocked_on_lock(owner_conn, user=urlsplit(settings.admin_url).username)
        other.commit()  # ...which then commits: the waiting update finds the row changed under it
    assert await asyncio.wait_for(running, 60) == []
