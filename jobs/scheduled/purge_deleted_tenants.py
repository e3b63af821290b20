"""Purge deleted workspaces whose grace period is over, 5,000 rows a run (sql/66_gdpr.sql)."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=1), per_tenant=False, sql="SELECT parley.purge_deleted_tenants(5000)")
