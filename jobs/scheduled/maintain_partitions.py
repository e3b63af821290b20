"""Create monthly partitions ahead and drop whole ones older than the longest retention in force."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(days=1), per_tenant=False, sql="SELECT parley.maintain_partitions()")
