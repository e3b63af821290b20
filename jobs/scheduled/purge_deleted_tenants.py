"""Purge deleted workspaces whose grace period is over, 5,000 rows a call (sql/66_gdpr.sql), call
after call while rows are left, for up to the run's budget (jobs.schedule.BACKLOG_BUDGET_S)."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(
    every=timedelta(minutes=1),
    per_tenant=False,
    sql="SELECT parley.purge_deleted_tenants(5000)",
    again=lambda deleted: bool(deleted),
)
