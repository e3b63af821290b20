"""Roll yesterday and today up into daily_stats (member statistics and analyst views read it)."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=10), per_tenant=True, sql="SELECT parley.rollup_daily_stats()")
