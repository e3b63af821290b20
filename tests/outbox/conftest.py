"""Outbox tests: a tenant (`support.knowledge`), a webhook sink and a drainer (`support.outbox`)."""
from support.knowledge import no_ambient_embedder, tenant  # noqa: F401 (fixtures)
from support.outbox import drainer, sink  # noqa: F401 (fixtures)
