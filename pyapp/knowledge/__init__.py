"""Knowledge ingestion without a database: extraction, chunking (storage lives elsewhere)."""
