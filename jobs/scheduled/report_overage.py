"""Write each metered tenant's overage rows for finished days (the runner then sends them to Stripe)."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(hours=1), per_tenant=True, sql="SELECT count(*) FROM parley.claim_usage_reports()")
