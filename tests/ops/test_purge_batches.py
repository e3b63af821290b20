"""The purge's batches (parley.purge_table_batch): a tenant whose messages and events lie in several
monthly partitions (and the default one), with more rows at one instant than a batch may take, is
purged to zero rows, never more than p_max_rows per call, while another tenant's rows in the same
partitions and at the same instants stay."""
from __future__ import annotations

import itertools

import asyncpg

# Instants in the default partition (before the monthly ones), this month and two months ahead.
AGES = ["now() - interval '60 days'", "now()", "now() + interval '35 days'", "now() + interval '70 days'"]


async def _seed(owner_conn, person, bot) -> None:
    conversation = await owner_conn.fetchval(
        "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status)"
        " VALUES ($1, $2, gen_random_uuid(), 'bot') RETURNING id", person.tenant_id, bot["id"])
    for i, at in enumerate(AGES):
        # Nine rows at the oldest instant (more than a batch), three at each later one.
        for _ in range(9 if i == 0 else 3):
            await owner_conn.execute(
                "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
                f" VALUES ($1, $2, 'visitor', 'hello', date_trunc('second', {at}))", person.tenant_id, conversation)
            await owner_conn.execute(
                "INSERT INTO parley.events (tenant_id, kind, conversation_id, actor_kind, at)"
                f" VALUES ($1, 'message_added', $2, 'visitor', date_trunc('second', {at}))",
                person.tenant_id, conversation)


async def _counts(owner_conn, tenant_id) -> dict[str, int]:
    return {table: await owner_conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant_id)
            for (table,) in await owner_conn.fetch("SELECT table_name::text FROM parley.tenant_owned_tables()")}


async def test_purge_across_partitions_and_ties(rows, owner_conn, settings):
    doomed, other = await rows.tenant(), await rows.tenant()
    for person in (doomed, other):
        await _seed(owner_conn, person, await rows.chatbot(person))
    spread = await owner_conn.fetchval(
        "SELECT count(DISTINCT tableoid) FROM parley.messages WHERE tenant_id = $1", doomed.tenant_id)
    assert spread == 4, spread  # the default partition and three monthly ones
    before_other = await _counts(owner_conn, other.tenant_id)
    assert before_other["parley.messages"] >= 18 and before_other["parley.events"] >= 18
    await owner_conn.execute("UPDATE parley.tenants SET deleted_at = now(), purge_after = now() - interval '1 second'"
                             " WHERE id = $1", doomed.tenant_id)
    jobs = await asyncpg.connect(settings.jobs_url)
    try:
        batches, trail = [], []  # trail: what each call left of the tenant's messages and events, and when
        while deleted := await jobs.fetchval("SELECT parley.purge_deleted_tenants(4)"):
            batches.append(deleted)
            trail.append(tuple(await owner_conn.fetchrow(
                "SELECT (SELECT count(*) FROM parley.messages WHERE tenant_id = $1),"
                " (SELECT count(*) FROM parley.events WHERE tenant_id = $1), clock_timestamp()", doomed.tenant_id)))
            assert len(batches) < 100
    finally:
        await jobs.close()
    assert max(batches) <= 4, batches  # nine rows at one instant go four, four and one
    assert sum(batches) >= 36, (batches, trail)
    left = {t: n for t, n in (await _counts(owner_conn, doomed.tenant_id)).items() if n}
    assert left == {"parley.tenant_purges": 1}, (left, batches)  # the record of the purge
    after_other = await _counts(owner_conn, other.tenant_id)
    assert after_other == before_other, {t: (n, after_other[t]) for t, n in before_other.items() if after_other[t] != n}


async def test_a_batch_ending_in_a_tie_takes_its_rest_there(rows, owner_conn, settings):
    """Fewer rows before the batch's last instant than it takes, and more than it takes at that
    instant: the batch takes the rest from that instant. A batch that stopped short there while rows
    were left let the purge's pass go on to the conversation, whose cascade took every message left
    in one call (a conversation of a million messages in one batch)."""
    doomed = await rows.tenant()
    bot = await rows.chatbot(doomed)
    conversation = await owner_conn.fetchval(
        "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status)"
        " VALUES ($1, $2, gen_random_uuid(), 'bot') RETURNING id", doomed.tenant_id, bot["id"])
    # Two messages at one second, five at the next, nine a month later: batches of 4 take 2 + 2 at
    # the first, then the three and one more at the second instant, and so on.
    for count, at in ((2, "0 s"), (5, "1 s"), (9, "30 days")):
        await owner_conn.execute(
            "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
            " SELECT $1, $2, 'visitor', 'hello', date_trunc('second', now() - interval '60 days') + $3::text::interval"
            " FROM generate_series(1, $4)", doomed.tenant_id, conversation, at, count)
    async with owner_conn.transaction():
        await owner_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(doomed.tenant_id))
        await owner_conn.execute("SET LOCAL ROLE parley_purge")
        taken = [await owner_conn.fetchval(
            "SELECT parley.purge_table_batch('parley.messages', 'created_at', $1, 4)", doomed.tenant_id)
            for _ in range(5)]
    assert taken == [4, 4, 4, 4, 0], taken

    # The whole purge: the conversation goes only once its messages have.
    for count, at in ((2, "0 s"), (5, "1 s"), (9, "30 days")):
        await owner_conn.execute(
            "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
            " SELECT $1, $2, 'visitor', 'hello', date_trunc('second', now() - interval '60 days') + $3::text::interval"
            " FROM generate_series(1, $4)", doomed.tenant_id, conversation, at, count)
    await owner_conn.execute("UPDATE parley.tenants SET deleted_at = now(), purge_after = now() - interval '1 second'"
                             " WHERE id = $1", doomed.tenant_id)
    left = ("SELECT (SELECT count(*) FROM parley.messages WHERE tenant_id = $1),"
            " (SELECT count(*) FROM parley.conversations WHERE tenant_id = $1)")
    jobs = await asyncpg.connect(settings.jobs_url)
    try:
        trail = [tuple(await owner_conn.fetchrow(left, doomed.tenant_id))]
        while await jobs.fetchval("SELECT parley.purge_deleted_tenants(4)"):
            trail.append(tuple(await owner_conn.fetchrow(left, doomed.tenant_id)))
            assert len(trail) < 100
    finally:
        await jobs.close()
    assert trail[0] == (16, 1) and trail[-1] == (0, 0), trail
    assert all(messages == 0 for messages, conversations in trail if conversations == 0), trail
    assert all(before[0] - after[0] <= 4 for before, after in itertools.pairwise(trail)), trail


async def test_a_batch_in_a_plain_table_stays_in_its_tenant(rows, owner_conn):
    """Row addresses repeat across tables and partitions; the batch deletes only the tenant's rows of
    the table it names, and no more than asked."""
    mine, theirs = await rows.tenant(), await rows.tenant()
    bots = {p.tenant_id: await rows.chatbot(p) for p in (mine, theirs)}
    for person in (mine, theirs):
        for _ in range(5):
            await rows.conversation(person.tenant_id, bots[person.tenant_id]["id"])
    async with owner_conn.transaction():
        await owner_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(mine.tenant_id))
        await owner_conn.execute("SET LOCAL ROLE parley_purge")
        took = await owner_conn.fetchval(
            "SELECT parley.purge_table_batch('parley.conversations', NULL, $1, 3)", mine.tenant_id)
        # Asked for another tenant, it finds nothing: row-level security keeps it in the one set.
        foreign = await owner_conn.fetchval(
            "SELECT parley.purge_table_batch('parley.conversations', NULL, $1, 3)", theirs.tenant_id)
    assert (took, foreign) == (3, 0)
    count = "SELECT count(*) FROM parley.conversations WHERE tenant_id = $1"
    assert await owner_conn.fetchval(count, mine.tenant_id) == 2
    assert await owner_conn.fetchval(count, theirs.tenant_id) == 5


async def test_rows_with_foreign_key_actions_weigh_more(rows, owner_conn, settings):
    """Deleting a conversation runs the action of every foreign key that references conversations
    (its messages, events, feedback... go or are detached), so it counts that many times more: with a
    budget of one conversation's weight, each call deletes at most one."""
    doomed = await rows.tenant()
    bot = await rows.chatbot(doomed)
    for _ in range(4):
        await rows.conversation(doomed.tenant_id, bot["id"])
    weight = 1 + await owner_conn.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = 'parley.conversations'::regclass"
        " AND conparentid = 0")
    assert weight > 5
    await owner_conn.execute("UPDATE parley.tenants SET deleted_at = now(), purge_after = now() - interval '1 second'"
                             " WHERE id = $1", doomed.tenant_id)
    count = "SELECT count(*) FROM parley.conversations WHERE tenant_id = $1"
    jobs = await asyncpg.connect(settings.jobs_url)
    try:
        left = [await owner_conn.fetchval(count, doomed.tenant_id)]
        while deleted := await jobs.fetchval("SELECT parley.purge_deleted_tenants($1)", weight):
            assert deleted <= weight
            left.append(await owner_conn.fetchval(count, doomed.tenant_id))
            assert len(left) < 200
    finally:
        await jobs.close()
    assert left[0] == 4 and left[-1] == 0
    assert all(before - after <= 1 for before, after in itertools.pairwise(left))
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.tenants WHERE id = $1", doomed.tenant_id) == 0
