"""Operations tests: tenants arranged as the superuser (`support.knowledge.tenant`), traces kept in
memory (`support.traces.spans`)."""
from support.knowledge import tenant  # noqa: F401 (fixture)
from support.traces import spans  # noqa: F401 (fixture)
