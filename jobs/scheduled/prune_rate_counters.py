"""Delete rate-limit windows that have ended."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=5), per_tenant=True, sql="SELECT parley.prune_rate_counters()")
