"""The jobs process: scheduled SQL jobs (claimed rows in parley.job_schedules) and queue draining."""
