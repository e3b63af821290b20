"""A tenant with a chatbot arranged as the superuser (`support.knowledge.tenant`); no ambient embedder."""
from support.knowledge import no_ambient_embedder, tenant  # noqa: F401 (fixtures)
