"""Operating the service: retention, partitions, health and maintenance tasks run by operators or jobs."""
