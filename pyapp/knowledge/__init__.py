"""Knowledge base: pure extraction and chunking (extract, chunking); import and storage (crawl, ingest)."""
