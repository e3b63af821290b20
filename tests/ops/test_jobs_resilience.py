"""`parley jobs` survives PostgreSQL going away: stopped without a shutdown checkpoint, kept down
while the process retries with backoff, started again; the process reconnects by itself, reports
its lag and claims due jobs again. Before, the first failed query ended the process."""
import asyncpg
import pytest
from support.cli import jobs_process, json_line
from support.database import postgres_down
from support.waits import until


async def test_jobs_survive_a_postgresql_restart(settings, pg_server, tmp_path):
    if not getattr(pg_server, "datadir", None):
        pytest.skip("TEST_DATABASE_URL: the run's PostgreSQL is not ours to restart")
    async with jobs_process(settings, tmp_path) as (proc, out):
        first = await out.wait_for(lambda line: "jobs_lag_s" in json_line(line))  # registered, one pass done
        assert json_line(out.lines[first])["reconnected"] is False

        # Down hard (no shutdown checkpoint), and kept down: the process retries, with growing delays.
        async with postgres_down(pg_server):
            down = await out.wait_for(lambda line: json_line(line).get("attempt") == 3, start=first)
            delays = [json_line(line)["retry_in_s"] for line in out.lines[first:down + 1]
                      if json_line(line).get("attempt")]
            assert proc.returncode is None and len(delays) >= 3 and all(0 < d <= 30 for d in delays)

        back = await out.wait_for(lambda line: json_line(line).get("reconnected") is True, start=first)
        assert json_line(out.lines[back])["jobs_lag_s"] >= 0
        # Working again: a job made due now is claimed and run by the same process.
        owner = await asyncpg.connect(settings.admin_url)
        try:
            marked = await owner.fetchval(
                "UPDATE parley.job_schedules SET next_run_at = now() - interval '1 second'"
                " WHERE name = 'prune_rate_counters' RETURNING now()")

            async def ran_again():
                started = await owner.fetchval(
                    "SELECT last_started_at FROM parley.job_schedules WHERE name = 'prune_rate_counters'")
                return started is not None and started >= marked

            await until(ran_again, timeout=30, what="prune_rate_counters run after the restart")
        finally:
            await owner.close()
        assert proc.returncode is None


async def test_lag_is_the_oldest_due_job_wait(settings, owner_conn):
    from jobs import runner, schedule
    from pyapp.db import create_pool

    await schedule.register(owner_conn)
    await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() + interval '1 hour'")
    pool = await create_pool(settings.jobs_url, min_size=1, max_size=1)
    try:
        assert await runner.lag_seconds(pool) == 0
        await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() - interval '90 seconds'"
                                 " WHERE name = 'retention'")
        await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() - interval '10 minutes',"
                                 " external = true WHERE name = 'compact_usage'")  # pg_cron's: not our lag
        assert 90 <= await runner.lag_seconds(pool) < 120
        assert await runner.lag_seconds(pool, ["compact_usage"]) == 0
    finally:
        await pool.close()
