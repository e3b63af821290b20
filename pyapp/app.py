"""The aiohttp application: middleware (request ids, JSON errors, logs), health, OpenAPI, surfaces."""

from __future__ import annotations

import asyncio
import errno
import importlib
import json
import logging
import re
import secrets
import time

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from pyapp import logs, metrics, migrate, tracing
from pyapp.api import api
from pyapp.config import Settings
from pyapp.context import EMBEDDER_WARM, POOL, REQUEST_ID, SETTINGS, TRUST_PROXY, WORKER, server_name
from pyapp.db import POOL_SIZE, create_pool, outage_error
from pyapp.errors import ApiError, from_postgres
from pyapp.http_guard import GuardedRunner, GuardLimits, raise_open_files_limit

log = logging.getLogger("parley.http")

# Each surface module declares its routes on `pyapp.api.api` when imported and may
# expose `setup(app)` for non-API routes (WebSockets, static files, console pages).
SURFACES: list[str] = [
    "pyapp.accounts",
    "pyapp.widget.sessions",
    "pyapp.widget.socket",
    "pyapp.widget.assets",
    "pyapp.widget.demo",
    "pyapp.agent.socket",
    "pyapp.agent.sse",
    "pyapp.console",
    "pyapp.chatbots.routes",
    "pyapp.conversations.routes",
    "pyapp.conversations.system_texts",
    "pyapp.conversations.actions",
    "pyapp.leads.routes",
    "pyapp.knowledge.routes",
    "pyapp.assistant.routes",
    "pyapp.assistant.responder",
    "pyapp.feedback",
    "pyapp.analytics",
    "pyapp.outbox.routes",
    "pyapp.billing.routes",
    "pyapp.webhooks.routes",
    "pyapp.channels.alerts",
    "pyapp.channels.telegram_routes",
    "pyapp.channels.telegram_inbound",
    "pyapp.billing.staff",
    "pyapp.gdpr.routes",
    "pyapp.domains.routes",
    "pyapp.ops.metrics",
    "pyapp.api_docs",
]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # metric labels: others are "other"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{6,64}$")


def _error_response(exc: BaseException, request_id: str) -> web.StreamResponse | None:
    """The JSON error a failed handler answers with; None: let aiohttp handle it (redirects, 101)."""
    if isinstance(exc, ApiError):
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    outage = outage_error(exc)  # before PostgresError: a shutdown or a lost connection is an outage too
    if outage is not None:
        if outage.code == "database_unavailable":
            log.warning("database unavailable: %s", type(exc).__name__, extra={"request_id": request_id})
        return _error_response(outage, request_id)
    if isinstance(exc, asyncpg.PostgresError):
        mapped = from_postgres(exc)
        if mapped is None:
            log.exception("database error", extra={"request_id": request_id})
            mapped = ApiError(500, "internal", "Internal error.")
        return _error_response(mapped, request_id)
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # a static file named past the file system's limit
        return _error_response(web.HTTPNotFound(), request_id)
    if isinstance(exc, HttpProcessingError):  # a body part a handler read was malformed (a multipart header past 8 KB)
        return _error_response(ApiError(400, "malformed_body", "The request body is malformed."), request_id)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400 or exc.status in (101,):
            return None
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}.get(
            exc.status, "http_error"
        )
        return web.json_response(
            {"error": {"code": code, "message": exc.reason}},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    log.exception("unhandled error", extra={"request_id": request_id})
    return web.json_response({"error": {"code": "internal", "message": "Internal error."}}, status=500)


MULTIPART_SLACK = 1_048_576  # a file upload's other fields and part headers, beside the file itself


def _declared_too_large(request: web.BaseRequest) -> ApiError | None:
    """A 413 for a body whose Content-Length is past anything the route reads, before reading a byte.

    aiohttp counts only what has arrived: a client announcing 2 GB and sending two bytes held a
    handler until the slow-client guard cut it, with no answer. Multipart bodies may carry a file
    up to the upload limit (the upload route counts the file itself as it streams).
    """
    size = request.content_length
    limit = request.client_max_size
    if request.content_type.startswith("multipart/"):
        from pyapp.knowledge.routes import UPLOAD_MAX_BYTES

        limit = max(limit, UPLOAD_MAX_BYTES + MULTIPART_SLACK)
    if size is None or size <= limit:
        return None
    return ApiError(413, "payload_too_large", f"Request bodies are limited to {limit} bytes.")


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` is answered with 100 only when the body may come: a declared body over
    the limit gets its 413 at once, any other expectation a 417, both in the JSON shape (aiohttp's
    own handler said 100 to any size and answered other expectations in plain text)."""
    refused: ApiError | None
    if request.headers.get("Expect", "").lower() != "100-continue":
        refused = ApiError(417, "expectation_failed", "Only Expect: 100-continue is understood.")
    else:
        refused = _declared_too_large(request)
    if refused is not None:
        response = web.json_response(refused.body(), status=refused.status)
        response.force_close()
        return response
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the 100 is not the response
    return None


def _client_gone(request: web.Request, exc: BaseException) -> web.Response | None:
    """The client closed its connection (or the slow-client guard closed it) before its body was read:
    nobody is left to answer and nothing failed here, so no traceback and no 5xx in the metrics."""
    transport = request.transport
    if isinstance(exc, ConnectionResetError) and (transport is None or transport.is_closing()):
        log.info("client closed the connection mid-request", extra={"request_id": request[REQUEST_ID]})
        body = {
            "error": {"code": "incomplete_request", "message": "The connection closed before the request was read."}
        }
        return web.json_response(body, status=400)
    return None


@web.middleware
async def request_context(request: web.Request, handler):
    """Request id, JSON error shape, and one structured log line per request."""
    rid = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = rid if _REQUEST_ID.match(rid) else secrets.token_hex(8)
    logs.bind(request_id=request[REQUEST_ID], conversation_id=request.match_info.get("conversation_id"))
    started = time.perf_counter()
    status = 500
    route = request.match_info.route.resource
    with tracing.server_span(
        f"{request.method} {route.canonical if route is not None else 'unmatched'}",
        request.headers,
        **{"http.request.method": request.method, "url.path": request.path, "parley.request_id": request[REQUEST_ID]},
    ) as span:
        try:
            too_large = _declared_too_large(request)
            if too_large is not None:
                raise too_large
            response = await handler(request)
            status = response.status
        except Exception as exc:
            failed = _client_gone(request, exc) or _error_response(exc, request[REQUEST_ID])
            if failed is None:
                raise
            response = failed
            status = response.status
        if status == 413:
            response.force_close()  # Connection: close; aiohttp drains the refused body for at most 10 s
        if span is not None:
            span.set_attribute("http.response.status_code", status)
    if not response.prepared:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    elapsed = time.perf_counter() - started
    metrics.HTTP_REQUESTS.labels(
        request.method if request.method in _METHODS else "other", metrics.status_class(status)
    ).inc()
    metrics.HTTP_SECONDS.observe(elapsed)
    log.info(
        json.dumps(
            {
                "request_id": request[REQUEST_ID],
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": round(elapsed * 1000, 1),
            }
        )
    )
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, dict] = {}
    ok = True
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            fingerprint = await conn.fetchval("SELECT fingerprint FROM parley_migrations.schema_state WHERE id = 1")
        checks["database"] = {"ok": True}
        current, message = migrate.schema_status(fingerprint)
        checks["schema"] = {"ok": current, "message": message}
        ok = current
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = {"ok": False, "message": type(exc).__name__}
        checks["schema"] = {"ok": False, "message": "unknown"}
        ok = False
    warming = request.app.get(EMBEDDER_WARM)  # the embedding model loading at start
    if warming is not None:
        checks["embedder"] = {"ok": warming.done()}
        ok = ok and warming.done()
    return web.json_response({"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(api.openapi())


def load_surfaces() -> list:
    return [importlib.import_module(name) for name in SURFACES]


def make_runner(app: web.Application, **kwargs) -> GuardedRunner:
    """The runner every server uses (`parley serve`, tests): slow or crowding clients are cut off."""
    return GuardedRunner(app, GuardLimits.from_settings(app[SETTINGS]), **kwargs)


async def serve(app: web.Application, host: str, port: int) -> None:
    """Run until SIGINT/SIGTERM, then shut down cleanly (sockets get 1001 and reconnect elsewhere)."""
    import signal

    limit = raise_open_files_limit()  # before make_runner: the connection cap follows it
    runner = make_runner(app, access_log=None)
    log.info("open-files limit %d; at most %d connections", limit, runner.guard.limits.max_connections)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("listening on %s:%d", host, port)  # what a supervisor (or a test) may wait for
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def create_app(settings: Settings, *, pool=None) -> web.Application:
    app = web.Application(middlewares=[request_context], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[TRUST_PROXY] = bool(settings.extra.get("trust_proxy"))
    app[WORKER] = server_name()
    modules = load_surfaces()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/openapi.json", openapi_json)
    api.install(app)
    for module in modules:
        if hasattr(module, "setup"):
            module.setup(app)
    for route in app.router.routes():  # aiohttp takes the Expect handler per route, when it is added
        route._expect_handler = expect_continue

    async def open_pool(app: web.Application):
        owned = pool is None
        app[POOL] = pool or await create_pool(
            settings.app_url,
            max_size=settings.extra.get("db_pool_size") or POOL_SIZE,
            worker=app[WORKER] if settings.pool_sessions_own else None,
        )
        yield
        if owned:
            await app[POOL].close()

    app.cleanup_ctx.insert(0, open_pool)
    return app
