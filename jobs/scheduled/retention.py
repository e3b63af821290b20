"""Delete closed conversations older than the plan's retention (cascade: messages, events,
feedback, ratings, assistant turns)."""
from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(hours=1), per_tenant=True, sql="SELECT parley.apply_retention()")
