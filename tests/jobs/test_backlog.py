"""Jobs that work off a backlog a batch at a time (retention, the purge): one run calls again, each
call its own short transaction, while the calls come back full, within the run's budget
(jobs.schedule.BACKLOG_BUDGET_S); a job without `again` is called once a run."""
from datetime import timedelta

from jobs import schedule
from jobs.scheduled import purge_deleted_tenants, retention
from support.knowledge import make_tenant


async def _old_messages(owner_conn, tenant, n):
    """n messages (and an event each) at distinct instants 40 days back: past the free plan's 30."""
    conversation = await owner_conn.fetchval(
        "INSERT INTO parley.conversations (tenant_id, chatbot_id, visitor_id, status)"
        " VALUES ($1, $2, gen_random_uuid(), 'bot') RETURNING id", tenant.id, tenant.chatbot_id)
    await owner_conn.execute(
        "INSERT INTO parley.messages (tenant_id, conversation_id, author, body, created_at)"
        " SELECT $1, $2, 'visitor', 'old words', now() - interval '40 days' + make_interval(mins => i)"
        " FROM generate_series(1, $3) i", tenant.id, conversation, n)
    await owner_conn.execute(
        "INSERT INTO parley.events (tenant_id, kind, conversation_id, actor_kind, at)"
        " SELECT $1, 'message_added', $2, 'visitor', now() - interval '40 days' + make_interval(mins => i)"
        " FROM generate_series(1, $3) i", tenant.id, conversation, n)


def _retention(batch):
    return schedule.Job(every=timedelta(minutes=15), per_tenant=True, sql="SELECT parley.apply_retention($1)",
                        args=lambda: (batch,), again=retention.JOB.again, name="retention")


async def _rows(owner_conn, tenant):
    return await owner_conn.fetchval(
        "SELECT (SELECT count(*) FROM parley.messages WHERE tenant_id = $1)"
        " + (SELECT count(*) FROM parley.events WHERE tenant_id = $1)", tenant.id)


async def test_retention_works_off_a_backlog_in_one_run(owner_conn, tenant):
    await _old_messages(owner_conn, tenant, 10)
    pool = await tenant.pool("jobs")
    # Without time for more, one call: a batch of messages and one of events.
    assert await schedule.run_job(pool, _retention(4), budget_s=0) == {"tenants": 1, "failed": 0, "total": 8}
    assert await _rows(owner_conn, tenant) == 12
    # With it, call after call while they find rows: 4 + 4, 2 + 2, then none.
    assert await schedule.run_job(pool, _retention(4)) == {"tenants": 1, "failed": 0, "total": 12, "calls": 3}
    assert await _rows(owner_conn, tenant) == 0


async def test_a_job_without_again_is_called_once(owner_conn, tenant):
    await _old_messages(owner_conn, tenant, 10)
    once = schedule.Job(every=timedelta(minutes=15), per_tenant=True, sql="SELECT parley.apply_retention(4)",
                        name="retention")
    assert await schedule.run_job(await tenant.pool("jobs"), once) == {"tenants": 1, "failed": 0, "total": 8}


async def test_the_purge_goes_on_while_rows_are_left(settings, owner_conn, tenant):
    doomed = await make_tenant(settings, owner_conn)
    await _old_messages(owner_conn, doomed, 10)
    await owner_conn.execute("UPDATE parley.tenants SET deleted_at = now(), purge_after = now() - interval '1 second'"
                             " WHERE id = $1", doomed.id)
    small = schedule.Job(every=timedelta(minutes=1), per_tenant=False, sql="SELECT parley.purge_deleted_tenants(4)",
                         again=purge_deleted_tenants.JOB.again, name="purge_deleted_tenants")
    result = await schedule.run_job(await tenant.pool("jobs"), small)
    assert result["calls"] > 5 and result["result"] >= 20, result  # 4 rows a call, the last one finding none
    assert await owner_conn.fetchval("SELECT count(*) FROM parley.tenants WHERE id = $1", doomed.id) == 0
    await doomed.close()


def test_the_backlog_jobs_declare_when_to_call_again():
    assert schedule.JOBS["retention"].args() == (retention.BATCH,)
    assert schedule.JOBS["retention"].again(1) and not schedule.JOBS["retention"].again(0)
    assert schedule.JOBS["purge_deleted_tenants"].again(1) and not schedule.JOBS["purge_deleted_tenants"].again(0)
    assert all(job.again is None for name, job in schedule.JOBS.items()
               if name not in ("retention", "purge_deleted_tenants"))
