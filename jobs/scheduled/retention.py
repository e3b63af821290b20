"""Per tenant, from its plan's retention: delete closed conversations past it (cascade: messages,
events, feedback, ratings, assistant turns), then a batch of its older messages and events that
still sit in partitions other tenants keep (parley.apply_retention). Every 15 minutes, so a backlog
goes in short transactions."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=15), per_tenant=True, sql="SELECT parley.apply_retention()")
