"""GET /api/events when the tenant's events cannot be read as it begins (the database has no room:
53300 at the connection limit): the stream, already answered 200, says so with an error event before it ends, as
the sockets do with database_unavailable and 1013; the client reconnects after `retry`."""
from __future__ import annotations

import contextlib

from support.realtime import SseClient

# The relay's first read of a tenant's events (the feed's cursor) fails as it does at the connection
# limit: a restrictive policy on parley.events whose check (STABLE, so checked once even with no row)
# raises 53300, in this test's database only.
UNREADABLE = ("""
CREATE FUNCTION parley.no_room() RETURNS boolean LANGUAGE plpgsql STABLE
AS $$ BEGIN RAISE EXCEPTION 'sorry, too many clients already' USING ERRCODE = '53300'; END $$""",
              "CREATE POLICY no_room ON parley.events AS RESTRICTIVE FOR SELECT USING (parley.no_room())")


async def test_sse_says_the_database_is_unavailable_when_the_events_cannot_be_read(server, tenant, owner_conn):
    for statement in UNREADABLE:
        await owner_conn.execute(statement)
    sse = await SseClient.connect(server, tenant["access_token"])
    try:
        assert sse.resp.status == 200
        error = await sse.expect(lambda e: e.get("event") == "error")
        assert error["data"] == {"code": "database_unavailable"}
        assert any(e.get("retry") for e in sse.events)  # the client's reconnect delay came first
    finally:
        with contextlib.suppress(Exception):
            await sse.close()
