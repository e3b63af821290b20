"""Monthly partitions of the outbox and its attempts ahead; drop whole months past the delivery log's keep."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(days=1), per_tenant=False, sql="SELECT parley.maintain_outbox_partitions()")
