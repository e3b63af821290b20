"""`parley jobs` survives PostgreSQL going away: stopped without a shutdown checkpoint, kept down
while the process retries with backoff, started again; the process reconnects by itself, reports
its lag and claims due jobs again. Before, the first failed query ended the process."""
import asyncio
import json
import os
import signal
import sys

import asyncpg
import pytest
from support.database import postgres_down
from support.knowledge import ROOT
from support.server import TEST_SECRET
from support.waits import until


class Output:
    """The lines a child process writes, and a wait for the first one matching."""

    def __init__(self, stream: asyncio.StreamReader):
        self.lines: list[str] = []
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream):
        while line := await stream.readline():
            async with self.changed:
                self.lines.append(line.decode(errors="replace").rstrip())
                self.changed.notify_all()

    async def wait_for(self, predicate, timeout: float = 60, start: int = 0) -> int:
        """Index of the first line from `start` on that satisfies predicate."""
        try:
            async with asyncio.timeout(timeout), self.changed:
                while True:
                    for i in range(start, len(self.lines)):
                        if predicate(self.lines[i]):
                            return i
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError("no such line; the last ones:\n" + "\n".join(self.lines[-20:])) from None


def _json(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def test_jobs_survive_a_postgresql_restart(settings, pg_server, tmp_path):
    if not getattr(pg_server, "datadir", None):
        pytest.skip("TEST_DATABASE_URL: the run's PostgreSQL is not ours to restart")
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PARLEY_JOBS_HEARTBEAT": str(tmp_path / "alive"), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyapp.cli", "jobs", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = Output(proc.stdout)
    try:
        first = await out.wait_for(lambda line: "jobs_lag_s" in _json(line))  # registered, one pass done
        assert _json(out.lines[first])["reconnected"] is False

        # Down hard (no shutdown checkpoint), and kept down: the process retries, with growing delays.
        async with postgres_down(pg_server):
            down = await out.wait_for(lambda line: _json(line).get("attempt") == 3, start=first)
            delays = [_json(line)["retry_in_s"] for line in out.lines[first:down + 1] if _json(line).get("attempt")]
            assert proc.returncode is None and len(delays) >= 3 and all(0 < d <= 30 for d in delays)

        back = await out.wait_for(lambda line: _json(line).get("reconnected") is True, start=first)
        assert _json(out.lines[back])["jobs_lag_s"] >= 0
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
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        await out.task
    assert code == 0, "\n".join(out.lines[-30:])


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
