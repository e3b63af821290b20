"""Operations tests: tenants arranged as the superuser (`support.knowledge.tenant`); `spans`, traces
on for the test with the OTel in-memory exporter (spans exported as each ends)."""
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.knowledge import tenant  # noqa: F401 (fixture)

from pyapp import tracing


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure(exporter, batch=False)
    yield exporter
    tracing.shutdown()
