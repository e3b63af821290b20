"""Jobs are declared once, in jobs/scheduled/ (one module each), and the database agrees:
the schedule the jobs process registers is the registry, every job's SQL is a parley function
the jobs role may run, and sql/ declares no job of its own."""
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from jobs import runner, schedule

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
FUNCTION_CALL = re.compile(r"\bparley\.(\w+)\s*\(")


async def test_registered_schedule_is_the_registry(settings, owner_conn, tenant):
    pool = await tenant.pool("jobs")
    await schedule.register(pool)  # as the jobs process does at start, with its role
    rows = dict(await owner_conn.fetch("SELECT name, every FROM parley.job_schedules"))
    assert rows == {name: job.every for name, job in schedule.JOBS.items()}
    assert set(schedule.JOBS) >= {"close_idle_conversations", "retention", "maintain_partitions"}


async def test_every_job_calls_one_parley_function_the_jobs_role_may_run(owner_conn):
    for name, job in schedule.JOBS.items():
        if job.work is not None:  # a job working outside SQL (DNS): every parley function its module calls
            called = sorted(set(FUNCTION_CALL.findall(Path(sys.modules[job.work.__module__].__file__).read_text())))
            assert called, f"{name}: its work calls no parley function"
        else:
            called = FUNCTION_CALL.findall(job.sql)
            assert len(called) == 1, f"{name}: {job.sql!r} should call one parley function"
        for function in called:
            allowed = await owner_conn.fetch(
                "SELECT has_function_privilege('parley_jobs', p.oid, 'EXECUTE') AS ok FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'parley' AND p.proname = $1",
                function)
            assert allowed and all(r["ok"] for r in allowed), f"{name}: parley.{function} missing or not for parley_jobs"


def test_sql_dir_declares_no_job():
    """A job named in sql/ (a seeded schedule row, say) would be a second declaration."""
    for path in SQL_DIR.glob("*.sql"):
        text = path.read_text()
        for name in schedule.JOBS:
            assert f"'{name}'" not in text, f"{path.name} names the job {name}: declare it in jobs/scheduled/ only"


async def test_every_job_runs_as_the_jobs_role(settings, owner_conn, tenant):
    await schedule.register(owner_conn)
    await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() - interval '1 second'")
    ran = await runner.run_due_jobs(await tenant.pool("jobs"), "test")
    assert sorted(ran) == sorted(schedule.JOBS)
    statuses = dict(await owner_conn.fetch("SELECT name, last_status FROM parley.job_schedules"))
    assert set(statuses.values()) == {"ok"}, statuses


async def test_registering_again_keeps_what_operators_set(settings, owner_conn, tenant):
    pool = await tenant.pool("jobs")
    await schedule.register(pool)
    await owner_conn.execute("UPDATE parley.job_schedules SET enabled = false, external = true,"
                             " next_run_at = '2030-01-01' WHERE name = 'retention'")
    assert await pool.fetchval("SELECT parley.register_jobs($1::text[], $2::interval[])",
                               list(schedule.JOBS), [j.every for j in schedule.JOBS.values()]) == 0
    changed = dict(schedule.JOBS, retention=schedule.Job(every=timedelta(hours=2), per_tenant=True,
                                                          sql=schedule.JOBS["retention"].sql, name="retention"))
    await schedule.register(pool, changed)
    row = await owner_conn.fetchrow("SELECT * FROM parley.job_schedules WHERE name = 'retention'")
    assert row["every"] == timedelta(hours=2)
    assert (row["enabled"], row["external"], row["next_run_at"].year) == (False, True, 2030)


async def test_the_jobs_role_cannot_write_the_schedule_otherwise(settings, tenant):
    import asyncpg

    pool = await tenant.pool("jobs")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("INSERT INTO parley.job_schedules (name, every) VALUES ('rogue', '1 minute')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("UPDATE parley.job_schedules SET every = '1 second'")


def test_discovery_names_jobs_by_module_and_refuses_a_module_without_job(tmp_path, monkeypatch):
    package = tmp_path / "lint_jobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sweep_things.py").write_text(
        "from datetime import timedelta\nfrom jobs.schedule import Job\n"
        "JOB = Job(every=timedelta(minutes=3), per_tenant=False, sql='SELECT parley.sweep()')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lint_jobs

    found = schedule.discover(lint_jobs)
    assert list(found) == ["sweep_things"] and found["sweep_things"].name == "sweep_things"
    (package / "helper.py").write_text("X = 1\n")
    with pytest.raises(TypeError, match=r"lint_jobs\.helper declares no JOB"):
        schedule.discover(lint_jobs)
    sys.modules.pop("lint_jobs", None)


def test_job_names_fit_the_schedule_table():
    for name in schedule.JOBS:
        assert re.fullmatch(r"[a-z][a-z0-9_]{1,62}", name)
