"""Per tenant, from its plan's retention: a batch of its older messages and events that still sit in
partitions other tenants keep, then its closed conversations past retention, as many as a batch
holds with their messages and events (parley.apply_retention). Every 15 minutes; a tenant with a
backlog (its retention lowered) gets batch after batch, each in its own short transaction, for up
to the run's budget (jobs.schedule.BACKLOG_BUDGET_S)."""

from datetime import timedelta

from jobs.schedule import Job

BATCH = 5000  # messages, events, and closed conversations weighed with theirs, a call

JOB = Job(
    every=timedelta(minutes=15),
    per_tenant=True,
    sql="SELECT parley.apply_retention($1)",
    args=lambda: (BATCH,),
    again=lambda deleted: bool(deleted),  # called again while a call finds rows
)
