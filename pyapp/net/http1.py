"""A lean HTTP/1.1 client for the outbox's many small POSTs to customer URLs (webhooks).

aiohttp's client costs ~150-200 µs of CPU per request (signals, tracing hooks, header objects,
URL parsing, cookie handling): for the outbox's thousands of tiny POSTs a second that was most of
the drainer's time. This client does only what a webhook delivery needs:

* The URL is vetted by the SSRF guard (``vet_url``: every resolved address checked) and the
  connection goes to one of exactly those vetted addresses (the name keeps Host, SNI and the
  certificate check); the vetting is reused for ``vet_ttl`` seconds per URL, never longer, so a
  name's new addresses are vetted again before use.
* Keep-alive connections pooled per (scheme, host, port, address); a connection idle longer than
  ``IDLE_S`` is closed rather than reused (servers drop idle ones after a few seconds), and a
  request whose reused connection turns out closed before any answer is sent once more on a new
  one (deliveries are idempotent by their webhook-id).
* No redirect is ever followed (a 3xx is returned as it is), one deadline covers connect, send
  and answer, and the answer's body is kept up to ``keep`` bytes (the rest read and dropped, up
  to ``DRAIN_MAX``; past that the connection is closed instead of reused).
* Content-Length and chunked answers; an answer with neither is read until the server closes.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Collection
from dataclasses import dataclass

from pyapp import tracing
from pyapp.net.safe_fetch import FetchFailed, Resolver, VettedURL, vet_url

IDLE_S = 4.0  # reuse a keep-alive connection idle at most this long
DRAIN_MAX = 1024 * 1024  # read at most this much of an answer's body to keep the connection
HEAD_MAX = 64 * 1024  # status line and headers
PER_KEY_MAX = 64  # connections open at once per (scheme, host, port, address)


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lowercased; a repeated header keeps its last value
    body: bytes  # at most `keep` bytes


class _Conn(asyncio.Protocol):
    """One connection, one request at a time: parses the answer as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None
        self._buf = bytearray()
        self._reset(0)

    def _reset(self, keep: int) -> None:
        self._keep = keep
        self._head: tuple[int, dict[str, str]] | None = None
        self._body = bytearray()
        self._seen = 0  # body bytes read (kept or not)
        self._length: int | None = None  # Content-Length; None with chunked or until-close
        self._chunked = False
        self._chunk_left = -1  # bytes left of the current chunk (-1: a size line is next)
        self._until_close = False
        self._reusable = True
        self._got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        self._buf += data
        try:
            self._parse()
        except ProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self.closed = True
        if self._waiter is not None and not self._waiter.done() and self._head is not None and self._until_close:
            self._finish(reusable=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._head is not None and self._until_close:
                self._finish(reusable=False)
            else:
                self._fail(ConnectionResetError("the server closed the connection before its answer ended"))

    # one exchange
    async def exchange(self, request: bytes, keep: int) -> tuple[Response, bool]:
        """Send a request, wait for the whole answer; returns it and whether the connection may be reused."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._reset(keep)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter

    @property
    def answered_nothing(self) -> bool:
        return not self._got_bytes

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        self._reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def _finish(self, *, reusable: bool) -> None:
        assert self._head is not None
        status, headers = self._head
        if self._buf:  # bytes after the answer: not a clean keep-alive stream
            reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((Response(status, headers, bytes(self._body)), reusable and self._reusable))

    def _take(self, data: bytes | bytearray) -> None:
        room = self._keep - len(self._body)
        if room > 0:
            self._body += data[:room]
        self._seen += len(data)
        if self._seen > DRAIN_MAX:  # not worth reading to the end to keep one connection
            self._reusable = False
            self._finish(reusable=False)
            self.close()

    def _parse(self) -> None:
        if self._waiter is None or self._waiter.done():
            if self._buf:  # bytes nobody asked for
                self.close()
            return
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > HEAD_MAX:
                    raise ProtocolError("answer headers too long")
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            del self._buf[: end + 4]
            status, headers = _parse_head(head)
            if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
                return self._parse()
            self._head = (status, headers)
            connection = headers.get("connection", "").lower()
            self._reusable = "close" not in connection and not head.startswith("HTTP/1.0")
            encoding = headers.get("transfer-encoding", "").lower()
            if status in (204, 304):
                self._length = 0
            elif "chunked" in encoding:
                self._chunked = True
            elif "content-length" in headers:
                try:
                    self._length = int(headers["content-length"])
                except ValueError:
                    raise ProtocolError("bad Content-Length") from None
                if self._length < 0:
                    raise ProtocolError("bad Content-Length")
            else:
                self._until_close = True
                self._reusable = False
        if self._until_close:
            self._take(self._buf)
            self._buf.clear()
            return
        if self._length is not None:
            n = min(self._length - self._seen, len(self._buf))
            self._take(self._buf[:n])
            del self._buf[:n]
            if self._seen >= self._length and not self.closed:
                self._finish(reusable=True)
            return
        self._parse_chunks()

    def _parse_chunks(self) -> None:
        while self._waiter is not None and not self._waiter.done():
            if self._chunk_left == -1:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise ProtocolError("bad chunk size line")
                    return
                line = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                del self._buf[: end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise ProtocolError("bad chunk size") from None
                if size == 0:
                    self._chunk_left = -2  # trailers until an empty line
                else:
                    self._chunk_left = size
            if self._chunk_left == -2:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    return
                trailer = bytes(self._buf[:end])
                del self._buf[: end + 2]
                if not trailer:
                    self._finish(reusable=True)
                    return
                continue
            if self._chunk_left > 0:
                n = min(self._chunk_left, len(self._buf))
                if n == 0:
                    return
                self._take(self._buf[:n])
                del self._buf[:n]
                self._chunk_left -= n
                if self._chunk_left > 0:
                    return
            if len(self._buf) < 2:  # the CRLF after a chunk's data
                self._chunk_left = 0
                return
            del self._buf[:2]
            self._chunk_left = -1


def _parse_head(head: str) -> tuple[int, dict[str, str]]:
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class _Pool:
    """Keep-alive connections to one vetted address."""

    def __init__(self, scheme: str, host: str, port: int, address: str, ssl_context: ssl.SSLContext | None):
        self.scheme, self.host, self.port, self.address = scheme, host, port, address
        self.ssl_context = ssl_context
        self.idle: list[_Conn] = []
        self.gate = asyncio.Semaphore(PER_KEY_MAX)
        self.busy = 0  # requests in flight or waiting for the gate

    def reuse(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since <= IDLE_S:
                return conn
            conn.close()
        return None

    async def connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(
            _Conn,
            host=self.address,
            port=self.port,
            ssl=self.ssl_context if self.scheme == "https" else None,
            server_hostname=self.host if self.scheme == "https" else None,
        )
        return conn

    def put_back(self, conn: _Conn) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def sweep(self, now: float) -> None:
        """Close the idle connections too old to reuse (or closed by the server)."""
        keep = []
        for conn in self.idle:
            if conn.closed or now - conn.idle_since > IDLE_S:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class PinnedClient:
    """POSTs to vetted addresses over pooled keep-alive connections (see the module's docstring).

    ``allow_hosts`` is the test-only allow-list of the SSRF guard (None: PARLEY_FETCH_ALLOW_HOSTS);
    errors: FetchRefused (the guard said no), FetchFailed (DNS), TimeoutError, OSError and
    ProtocolError (the network or the server)."""

    def __init__(
        self,
        *,
        allow_hosts: Collection[str] | None = None,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "Parley/1.0",
        vet_ttl: float = 30.0,
    ):
        from pyapp.net.safe_fetch import allow_hosts_from_env

        self.allow_hosts = frozenset(allow_hosts) if allow_hosts is not None else allow_hosts_from_env()
        self.resolver = resolver
        self.ssl_context = ssl_context
        self.user_agent = user_agent
        self.vet_ttl = vet_ttl
        self._vetted: dict[str, tuple[float, VettedURL]] = {}
        self._pools: dict[tuple[str, str, int, str], _Pool] = {}
        self._swept = time.monotonic()

    async def vet(self, url: str) -> VettedURL:
        hit = self._vetted.get(url)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.vet_ttl:
            return hit[1]
        vetted = await vet_url(url, allow_hosts=self.allow_hosts, resolver=self.resolver)
        if len(self._vetted) > 10_000:
            self._vetted.clear()
        self._vetted[url] = (now, vetted)
        return vetted

    def _sweep(self, now: float | None = None) -> None:
        """Now and then: close expired idle connections and forget pools with nothing open or waiting
        (and vettings past their time)."""
        now = time.monotonic() if now is None else now
        if now - self._swept < IDLE_S:
            return
        self._swept = now
        for key, pool in list(self._pools.items()):
            pool.sweep(now)
            if not pool.idle and not pool.busy:
                del self._pools[key]
        for url, (at, _v) in list(self._vetted.items()):
            if now - at >= self.vet_ttl:
                del self._vetted[url]

    def _pool(self, vetted: VettedURL) -> _Pool:
        self._sweep()
        scheme = vetted.url.scheme
        key = (scheme, vetted.host, vetted.port, vetted.addresses[0])
        pool = self._pools.get(key)
        if pool is None:
            context = None
            if scheme == "https":
                context = self.ssl_context or _default_context()
            pool = self._pools[key] = _Pool(scheme, vetted.host, vetted.port, vetted.addresses[0], context)
        return pool

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout: float, keep: int) -> Response:
        """POST ``body`` with ``headers`` (values without CR/LF; Host, Content-Length, User-Agent added)
        within ``timeout`` seconds; the answer's body cut to ``keep`` bytes."""
        async with asyncio.timeout(timeout):
            vetted = await self.vet(url)
            if not vetted.addresses:
                raise FetchFailed("dns_failed", "no address", url=url)
            pool = self._pool(vetted)
            request = _request_bytes(vetted, body, headers, self.user_agent)
            # Traces on: a client span under the current one (an outbox send); method and host only.
            span = tracing.start_client_span(
                "HTTP POST", **{"http.request.method": "POST", "server.address": vetted.host}
            )
            try:
                response = await self._send(pool, request, keep)
            except BaseException as exc:
                tracing.end_client_span(span, error=exc)
                raise
            tracing.end_client_span(span, status_code=response.status)
            return response

    async def _send(self, pool: _Pool, request: bytes, keep: int) -> Response:
        pool.busy += 1
        try:
            async with pool.gate:
                conn = pool.reuse()
                if conn is not None:
                    try:
                        return await self._exchange(pool, conn, request, keep)
                    except (OSError, ProtocolError):
                        if not conn.answered_nothing:
                            raise
                        # The server had closed the idle connection: once more on a new one.
                return await self._exchange(pool, await pool.connect(), request, keep)
        finally:
            pool.busy -= 1

    async def _exchange(self, pool: _Pool, conn: _Conn, request: bytes, keep: int) -> Response:
        try:
            response, reusable = await conn.exchange(request, keep)
        except BaseException:
            conn.close()
            raise
        if reusable and not conn.closed:
            pool.put_back(conn)
        else:
            conn.close()
        return response

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _request_bytes(vetted: VettedURL, body: bytes, headers: dict[str, str], user_agent: str) -> bytes:
    url = vetted.url
    host = url.raw_host or vetted.host
    if ":" in host:
        host = f"[{host}]"
    if not url.is_default_port():
        host = f"{host}:{vetted.port}"
    lines = [f"POST {url.raw_path_qs or '/'} HTTP/1.1", f"Host: {host}", f"User-Agent: {user_agent}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} is not allowed")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_CONTEXT: ssl.SSLContext | None = None


def _default_context() -> ssl.SSLContext:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = ssl.create_default_context()
    return _CONTEXT
