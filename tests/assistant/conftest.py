"""Assistant tests: an owner with a chatbot and its knowledge (`support.assistant.bot`), visitors."""
from support.assistant import bot  # noqa: F401 (fixtures)
from support.knowledge import no_ambient_embedder, tenant  # noqa: F401 (fixtures)
from support.realtime import clients  # noqa: F401 (fixtures)
