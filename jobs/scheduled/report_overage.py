"""Write each metered tenant's overage rows for finished days and queue them to Stripe through the outbox."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(hours=1), per_tenant=True, sql="SELECT parley.queue_usage_reports()")
