"""Mark delinquent subscriptions whose grace period ended as limited (Free's limits, no data lost)."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=10), per_tenant=True, sql="SELECT parley.sweep_grace()")
