"""Dead-letter pending deliveries long past their retry deadline that no drainer reached (paused destination)."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=10), per_tenant=True, sql="SELECT parley.expire_outbox_deliveries()")
