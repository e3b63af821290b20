"""Console pages (in progress)."""
