"""Operations tests: tenants arranged as the superuser (`support.knowledge.tenant`)."""
from support.knowledge import tenant  # noqa: F401 (fixture)
