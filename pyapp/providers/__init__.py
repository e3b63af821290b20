"""Model providers: embeddings and chat LLMs, plus prompt building. No tenants, no database."""
