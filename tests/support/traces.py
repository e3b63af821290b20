"""`spans`: traces on for the test, spans kept by the OTel in-memory exporter (each as it ends)."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pyapp import tracing


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure(exporter, batch=False)
    yield exporter
    tracing.shutdown()
