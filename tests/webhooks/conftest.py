"""Webhook tests: a webhook sink and drainers (`support.outbox`)."""
from support.outbox import sink  # noqa: F401 (fixtures)
