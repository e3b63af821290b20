"""OpenTelemetry traces: off unless configured, and then free of cost when off.

`configure()` (at `parley serve` / `parley jobs` start) turns them on when
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set: spans go in batches to
that OTLP/HTTP endpoint (the exporter reads the standard OTEL_* variables: headers, timeout).
Tests pass their own exporter. Spans: one per HTTP request (server kind, continuing an incoming
W3C `traceparent`), one per socket frame (a trace of its own, linked to the socket's), one per tenant
transaction or statement under it (pyapp.db; none outside a span), one per outbox delivery attempt in
the jobs process, and one per outgoing HTTP request under it (pyapp.net). A transaction hands its span's
traceparent to SQL (app.traceparent), an outbox row keeps it, and the send continues that trace: one
trace from the request to the channel send. A leaf: imports nothing from pyapp.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
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


def span(
    name: str, *, parent: str | None = None, links: Iterable[str | None] = (), **attributes: Any
) -> contextlib.AbstractContextManager:
    """A span around the block (a no-op context when traces are off). `parent`: a W3C traceparent to
    continue (an outbox row's; a malformed one starts a new trace); `links`: traceparents of other
    spans this one also serves (the other deliveries of a coalesced post)."""
    if _tracer is None:
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(
        name,
        context=_context(parent) if parent is not None else None,
        links=_links(links),
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def frame_span(name: str, **attributes: Any) -> contextlib.AbstractContextManager:
    """A span of its own trace around one frame of a long-lived socket, linked to the socket's span
    (a conversation's frames do not all hang under one span that ends when the socket closes)."""
    if _tracer is None:
        return contextlib.nullcontext()
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, get_current_span

    socket = get_current_span().get_span_context()
    return _tracer.start_as_current_span(
        name,
        context=Context(),
        links=[Link(socket)] if socket.is_valid else [],
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def traceparent() -> str | None:
    """The W3C traceparent of the current span: None when traces are off or no span is current."""
    if _tracer is None:
        return None
    from opentelemetry.trace import get_current_span

    ctx = get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _context(traceparent: str) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _links(traceparents: Iterable[str | None]) -> list[Any]:
    from opentelemetry.trace import Link, get_current_span

    found = []
    for value in traceparents:
        if value:
            ctx = get_current_span(_context(value)).get_span_context()
            if ctx.is_valid:
                found.append(Link(ctx))
    return found


def start_client_span(name: str, **attributes: Any) -> Any:
    """An outgoing call's span (client kind) under the current span, for callers that start and end
    it in callbacks (aiohttp's trace hooks); None when traces are off or no span is current."""
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind, get_current_span

    if not get_current_span().get_span_context().is_valid:
        return None
    return _tracer.start_span(
        name, kind=SpanKind.CLIENT, attributes={k: v for k, v in attributes.items() if v is not None}
    )


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


def end_client_span(span: Any, *, status_code: int | None = None, error: BaseException | None = None) -> None:
    """End a span from start_client_span (None: nothing to end) with the answer's status or the error."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
        if status_code >= 500:
            span.set_status(Status(StatusCode.ERROR))
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR))
    span.end()
