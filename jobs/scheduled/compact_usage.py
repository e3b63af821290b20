"""Fold the usage counter shards of past days into one row each."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(days=1), per_tenant=True, sql="SELECT parley.compact_usage()")
