"""OpenTelemetry traces: off unless configured, and then free of cost when off.

`configure()` (at `parley serve` / `parley jobs` start) turns them on when
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set: spans go in batches to
that OTLP/HTTP endpoint (the exporter reads the standard OTEL_* variables: headers, timeout).
Tests pass their own exporter. Spans: one per HTTP request (server kind, continuing an incoming
W3C `traceparent`), one per tenant transaction or statement under it (pyapp.db; none outside a span), one per
outbox delivery attempt in the jobs process (the send to a webhook or channel). A leaf: imports
nothing from pyapp.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

_tracer: Any = None  # an opentelemetry Tracer while traces are on
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def configure(exporter: Any = None, *, service: str = "parley", batch: bool = True) -> bool:
    """Turn traces on with `exporter`, or with the OTLP/HTTP exporter when the environment names an
    endpoint; returns whether traces are on."""
    global _tracer, _provider
    if exporter is None:
        if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("parley")
    return True


def shutdown() -> None:
    """Flush and turn traces off."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager:
    """A span around the block (a no-op context when traces are off)."""
    if _tracer is None:
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(name, attributes={k: v for k, v in attributes.items() if v is not None})


def child_span(name: str, **attributes: Any) -> contextlib.AbstractContextManager:
    """A span only inside another one (a request's, a delivery's): the SQL of background work (the
    relay's reads, the batcher) would otherwise make a trace of its own per statement."""
    if _tracer is None:
        return contextlib.nullcontext()
    from opentelemetry.trace import get_current_span

    if not get_current_span().get_span_context().is_valid:
        return contextlib.nullcontext()
    return span(name, **attributes)


@contextlib.contextmanager
def server_span(name: str, headers: Mapping[str, str], **attributes: Any) -> Iterator[Any]:
    """A server span continuing the caller's trace (W3C traceparent in `headers`); yields the span
    (None when traces are off) so the caller can add the status."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        name, context=extract(dict(headers)), kind=SpanKind.SERVER, attributes=attributes
    ) as current:
        yield current
