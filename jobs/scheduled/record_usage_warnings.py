"""Record allowances that reached 80 % or 100 % (once per period), for the owners' mail."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=5), per_tenant=True, sql="SELECT parley.record_usage_warnings()")
