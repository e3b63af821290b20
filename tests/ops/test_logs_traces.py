"""Structured logs and traces (pyapp/logs.py, pyapp/tracing.py): with PARLEY_LOG_FORMAT=json each
line is one JSON object carrying the request, tenant and conversation ids where known; traces
(off by default) follow a request through its SQL, and an outbox delivery to its send (one trace across
both: tests/ops/test_trace_outbox.py); with
OTEL_EXPORTER_OTLP_ENDPOINT set they reach an OTLP/HTTP receiver (a local one the test runs)."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pyapp import logs, tracing
from support.knowledge import ROOT
from support.outbox import add_destination, make_drainer, post, sink, start_conversation  # noqa: F401 (fixture)
from support.realtime import create_chatbot, widget_session
from support.server import free_port
from support.waits import until


@pytest.fixture
def json_lines():
    """The root logger's lines, as PARLEY_LOG_FORMAT=json writes them (parsed back)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


async def test_json_lines_carry_the_ids(server, signup, owner_conn, json_lines):
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    sess = await widget_session(server, bot["key"])
    cid = sess["conversation_id"]
    status, _ = await server.call("POST", f"/api/conversations/{cid}/reply", token=owner["access_token"],
                                  json={"body": "Hello", "client_id": "r-1"}, headers={"X-Request-Id": "req-logs-1"})
    assert status == 201
    access = [line for line in json_lines() if line.get("request_id") == "req-logs-1"]
    assert access, json_lines()[-5:]
    line = access[-1]
    # The access log's own fields merged in (not a quoted string), plus the three ids.
    assert line["status"] == 201 and line["method"] == "POST" and line["level"] == "info" and line["ts"]
    assert line["tenant_id"] == owner["tenant_id"] and line["conversation_id"] == cid
    # Requests do not leak their ids into each other's lines.
    status, _ = await server.call("GET", "/healthz", headers={"X-Request-Id": "req-logs-2"})
    health = [line for line in json_lines() if line.get("request_id") == "req-logs-2"][-1]
    assert "tenant_id" not in health and "conversation_id" not in health


def test_parley_log_format_json_configures_the_process():
    code = ("import logging; from pyapp import logs; logs.configure(); logs.bind(tenant_id='t-1');"
            " logging.getLogger('x').warning('hello %s', 'world')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PARLEY_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)})
    line = json.loads(out.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["tenant_id"] == "t-1" and line["level"] == "warning"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**{k: v for k, v in os.environ.items() if k != "PARLEY_LOG_FORMAT"},
                              "PYTHONPATH": str(ROOT)})
    assert out.stderr.strip().splitlines()[-1] == "hello world"  # the default stays human-readable


async def test_a_request_is_traced_through_its_sql(server, signup, owner_conn, spans):
    owner = await signup(server)
    bot = await create_chatbot(owner_conn, owner["tenant_id"])
    sess = await widget_session(server, bot["key"])
    spans.clear()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, _ = await server.call("POST", f"/api/conversations/{sess['conversation_id']}/reply",
                                  token=owner["access_token"], json={"body": "Hi", "client_id": "t-1"},
                                  headers={"traceparent": parent})
    assert status == 201
    done = spans.get_finished_spans()
    request = next(s for s in done if s.name == "POST /api/conversations/{conversation_id}/reply")
    assert request.attributes["http.response.status_code"] == 201
    assert format(request.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # the caller's trace
    sql = [s for s in done if s.name in ("db.transaction", "db.statement")
           and s.context.trace_id == request.context.trace_id]
    assert sql and all(s.parent is not None for s in sql)
    assert any(s.parent.span_id == request.context.span_id for s in sql)


async def test_an_outbox_delivery_is_traced_to_its_send(tenant, owner_conn, sink, spans):  # noqa: F811  pytest fixture imported above, injected by name
    await add_destination(owner_conn, tenant, sink.url)
    conv = await start_conversation(tenant)
    await post(tenant, conv, "traced")
    drainer = make_drainer(await tenant.pool("jobs"))
    try:
        await drainer.drain()
    finally:
        await drainer.close()
    send = [s for s in spans.get_finished_spans() if s.name == "outbox.send"]
    assert send and send[0].attributes["parley.destination_kind"] == "webhook"
    # The drain's own tenant transactions are not traced one by one (no span around them); SQL
    # outside any request or delivery makes no trace of its own either.
    spans.clear()
    async with await tenant.tx("service") as conn:
        await conn.fetchval("SELECT 1")
    assert spans.get_finished_spans() == ()


async def test_otlp_http_export_to_a_local_receiver(server, monkeypatch):
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        received.append(msg)
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    try:
        assert tracing.configure(service="parley-test")
        assert (await server.call("GET", "/readyz"))[0] == 200
        await asyncio.to_thread(tracing.shutdown)  # flushes the batch (the receiver answers on this loop)
        await until(lambda: received, what="an OTLP export")
        names = {span.name for msg in received for rs in msg.resource_spans for ss in rs.scope_spans
                 for span in ss.spans}
        assert "GET /readyz" in names
        service = {a.value.string_value for msg in received for rs in msg.resource_spans
                   for a in rs.resource.attributes if a.key == "service.name"}
        assert service == {"parley-test"}
    finally:
        tracing.shutdown()
        await runner.cleanup()


def test_traces_are_off_without_an_endpoint(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.configure() is False and not tracing.enabled()
    with tracing.span("anything") as nothing:
        assert nothing is None
