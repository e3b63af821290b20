"""The AI assistant: the bot responder, which LLM it uses, and the tenants' provider settings."""
