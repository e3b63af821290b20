"""Slow and crowded clients: header and body read deadlines, and a cap on connections per address.

aiohttp closes idle keep-alive connections but has no deadline for a request that arrives
slowly: a client sending one header line every few seconds (or a body a byte at a time) holds
its connection, and a handler's coroutine, for ever. `GuardedRunner` serves the app with a
request handler that tracks each connection's phase, and one watchdog per server that closes:
- a connection whose request head is not complete `header_timeout` seconds after its first byte;
- a connection whose request body has been silent for `body_idle_timeout`, or still incomplete
  `body_timeout` after its head;
- a new connection from an address that already holds `max_connections_per_ip` (0: no cap;
  behind a proxy every client shares the proxy's address, so set it there, not here);
- a new connection past `max_connections` in all, answered `503 server_busy` at once. By default the
  cap is the open-files limit less RESERVED_FILES, so the connections never take the descriptors the
  pool, the relay and served files need, and accept() never fails for want of one (at that limit
  asyncio's accept loop logged a traceback per pending connection and rescheduled itself once per
  error: a server given more sockets than its limit spun and filled its log, bench/connections.py).
WebSockets and streaming responses are not touched once their request has been read.

A request aiohttp cannot parse (a bad request line, header or chunk, a line past 8 KB) never reaches
the application's middleware: the handler answers it here in the API's JSON error shape, and logs
one line naming the kind of fault, never the request's bytes (aiohttp's own answer is plain text
quoting the offending line, and it logs a traceback with that line: an `Authorization` or `Cookie`
header with one bad byte put its token in the log, and every malformed request cost a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from dataclasses import dataclass

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

log = logging.getLogger("parley.http")


# Descriptors the connection cap leaves free, at least: the pool, the relay's LISTEN, logs and served
# files (about 30), and what accept() takes before the handler counts it (two ticks of asyncio's accept
# loop, which accepts up to the listen backlog, 128, at a time). A tenth of a larger limit is kept
# instead, for the server's own outgoing connections (bot answers streaming from the model, imports).
RESERVED_FILES = 320

_BUSY_BODY = b'{"error":{"code":"server_busy","message":"The server has too many connections; retry shortly."}}'
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (a shell's or systemd's
    default soft limit, often 1,024, is far below thousands of sockets); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open-files limit stays %d: %s", soft, exc)
    return soft


def connection_cap() -> int:
    """The default of max_connections: the open-files limit less RESERVED_FILES or a tenth of it, whichever
    is more (at least half of the limit)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(soft - max(RESERVED_FILES, soft // 10), soft // 2)


@dataclass
class GuardLimits:
    header_timeout: float = 10.0
    body_idle_timeout: float = 15.0
    body_timeout: float = 120.0
    max_connections_per_ip: int = 256
    max_connections: int = 0  # in all (0: no cap); from_settings: connection_cap() unless set
    tick: float = 0.5  # how often the watchdog looks

    @classmethod
    def from_settings(cls, settings) -> GuardLimits:
        extra = getattr(settings, "extra", {}) or {}
        behind_proxy = bool(extra.get("trust_proxy"))
        return cls(
            header_timeout=float(extra.get("header_timeout", cls.header_timeout)),
            body_idle_timeout=float(extra.get("body_idle_timeout", cls.body_idle_timeout)),
            body_timeout=float(extra.get("body_timeout", cls.body_timeout)),
            max_connections_per_ip=int(
                extra.get("max_connections_per_ip", 0 if behind_proxy else cls.max_connections_per_ip)
            ),
            max_connections=int(extra.get("max_connections") or connection_cap()),
        )


class _Guard:
    """Per server: live connections by address and the watchdog over them."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self.by_ip: Counter[str] = Counter()
        self.handlers: set[GuardedHandler] = set()
        self.connections = 0
        self.busy = 0  # connections answered server_busy
        self.refused = 0
        self.timed_out = 0
        self._task: asyncio.Task | None = None

    def watch(self, handler: GuardedHandler) -> None:
        self.handlers.add(handler)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watchdog(), name="http-guard")

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while self.handlers:
            await asyncio.sleep(self.limits.tick)
            now = loop.time()
            for handler in list(self.handlers):
                reason = handler.overdue(now, self.limits)
                if reason:
                    self.timed_out += 1
                    log.info("closing a slow connection from %s (%s)", handler.peer_ip, reason)
                    handler.force_close()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class GuardedHandler(RequestHandler):
    """aiohttp's request handler plus the phase of the request being read (idle, head, body)."""

    def __init__(self, manager: GuardedServer, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self.peer_ip = ""
        self._phase = "idle"  # idle | head | body | upgraded
        self._phase_start = 0.0
        self._last_data = 0.0
        self._body: StreamReader | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, (tuple, list)) and peer else ""
        guard = self._guard
        guard.connections += 1
        guard.by_ip[self.peer_ip] += 1
        if guard.limits.max_connections and guard.connections > guard.limits.max_connections:
            if guard.busy % 1000 == 0:  # one line per thousand, not one per connection
                log.warning("server busy: %d connections open; new ones are answered 503", guard.connections - 1)
            guard.busy += 1
            transport.write(BUSY)
            self.force_close()
            return
        cap = guard.limits.max_connections_per_ip
        if cap and guard.by_ip[self.peer_ip] > cap:
            guard.refused += 1
            self.force_close()
            return
        guard.watch(self)

    def connection_lost(self, exc) -> None:
        guard = self._guard
        guard.connections -= 1
        guard.handlers.discard(self)
        if self.peer_ip in guard.by_ip:
            guard.by_ip[self.peer_ip] -= 1
            if guard.by_ip[self.peer_ip] <= 0:
                del guard.by_ip[self.peer_ip]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = self._loop.time()
        self._last_data = now
        if self._phase == "idle" and data:
            self._phase, self._phase_start = "head", now
        before = self._request_count
        super().data_received(data)
        if self._upgraded:
            self._phase = "upgraded"
        elif self._request_count > before:  # a request head is complete
            payload = self._messages[-1][1] if self._messages else None
            if payload is not None and not payload.is_eof():
                self._phase, self._phase_start, self._body = "body", now, payload
            else:
                self._phase, self._body = "idle", None

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None, message=None):
        """What aiohttp answers outside the application (see the module docstring), as JSON."""
        if request.writer.output_size > 0:  # a response is under way: the connection is broken
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if status >= 500:
            log.error("request from %s failed outside the application (%s)", request.remote, type(exc).__name__)
            code, text = ("timeout", "The request took too long.") if status == 504 else ("internal", "Internal error.")
        else:
            log.info("malformed request from %s (%s)", request.remote, type(exc).__name__)
            if isinstance(exc, LineTooLong) or (isinstance(exc, HttpProcessingError) and "Too many" in exc.message):
                code, text = "request_head_too_large", "The request line or its headers are too large."
            else:
                code, text = "bad_request", "The request is not valid HTTP/1.1."
        response = web.json_response({"error": {"code": code, "message": text}}, status=status)
        response.force_close()
        return response

    def overdue(self, now: float, limits: GuardLimits) -> str | None:
        if self._phase == "head" and now - self._phase_start > limits.header_timeout:
            return "request head too slow"
        if self._phase == "body":
            if self._body is None or self._body.is_eof():
                self._phase, self._body = "idle", None
            elif now - self._last_data > limits.body_idle_timeout:
                return "request body stalled"
            elif now - self._phase_start > limits.body_timeout:
                return "request body too slow"
        return None


class GuardedServer(Server):
    def __init__(self, *args, guard: _Guard, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` whose connections are guarded (see the module docstring)."""

    def __init__(self, app: web.Application, limits: GuardLimits, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.guard = _Guard(limits)

    async def _make_server(self) -> Server:
        app = self._app
        loop = asyncio.get_running_loop()
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        kwargs = dict(self._kwargs)
        kwargs["debug"] = app._debug
        kwargs.setdefault("access_log_class", AccessLogger)
        for k, v in (app._handler_args or {}).items():
            kwargs[k] = v
        return GuardedServer(app._handle, request_factory=app._make_request, loop=loop, guard=self.guard, **kwargs)

    async def cleanup(self) -> None:
        self.guard.stop()
        await super().cleanup()
