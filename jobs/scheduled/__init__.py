"""One module per scheduled job: the module's name is the job's name, its `JOB` the rest."""
