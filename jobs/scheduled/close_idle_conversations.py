"""Close conversations idle longer than their chatbot's (else the tenant's) idle time."""

from datetime import timedelta

from jobs.schedule import Job

JOB = Job(every=timedelta(minutes=1), per_tenant=True, sql="SELECT parley.close_idle_conversations()")
