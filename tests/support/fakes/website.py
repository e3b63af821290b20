"""A small local documentation website for knowledge-import and SSRF tests.

``FakeWebsite`` serves "Acme Widgets" help pages on 127.0.0.1 (random port): real content
wrapped in the usual noise (header, nav, sidebar, cookie form, footer, scripts, styles), a
sitemap, robots.txt, a PDF, Markdown and text files, and hostile or awkward endpoints:

=============================  =============================================================
path                           what it does
=============================  =============================================================
``/``, ``/docs/getting-started``, ``/docs/billing``, ``/faq``, ``/about``   HTML pages
``/private``                   a page that must never be imported (target of hostile redirects)
``/sitemap.xml``               urlset of the HTML pages and the PDF (absolute URLs)
``/sitemap_index.xml``         sitemapindex pointing at ``/sitemap.xml``
``/robots.txt``                names the sitemap
``/guide.pdf``                 two-page PDF with a title
``/notes.md``, ``/notes.txt``  Markdown and plain text
``/image.png``                 a few bytes of ``image/png``
``/redirect/local``            302 to ``http://127.0.0.1:<port>/private``
``/redirect/localhost``        302 to ``http://localhost:<port>/private``
``/redirect/metadata``         302 to ``http://169.254.169.254/latest/meta-data/``
``/redirect/to?url=U``         302 to any URL ``U``
``/redirect/chain/N``          N redirects, then ``/``
``/redirect/loop``             redirects to itself forever
``/big?size=N``                N bytes of text, streamed without Content-Length (default 6 MiB)
``/big-declared?size=N``       the same with Content-Length
``/slow``                      sends headers, then stalls until the site closes
``/status/N``                  an empty response with status N
``/echo``                      JSON of the request's method, path and headers
``/gzip``                      a gzip-encoded HTML page
=============================  =============================================================

Every request is recorded in ``site.requests`` as ``(method, path_qs, headers)``.

Usage::

    async with FakeWebsite() as site:
        url = site.url("/faq")
"""
from __future__ import annotations

import asyncio
import gzip
import ssl

from aiohttp import web

from support.fakes.pdf import make_pdf

_LAYOUT = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} | Acme Widgets Help</title>
  <style>body {{ font-family: sans-serif; }} .hidden {{ display: none }}</style>
  <script>var tracking = "TRACKING-SCRIPT-NOISE"; window.dataLayer = [];</script>
</head>
<body>
  <header class="site-header"><a href="/">Acme Widgets</a> <span>HEADER-NOISE Log in</span></header>
  <nav><ul>
    <li><a href="/">Home</a></li>
    <li><a href="/docs/getting-started">Getting started</a></li>
    <li><a href="/docs/billing">Billing</a></li>
    <li><a href="/faq">FAQ</a></li>
    <li><a href="/about">About</a></li>
    <li>NAV-NOISE</li>
  </ul></nav>
  <aside>SIDEBAR-NOISE Related: <a href="/faq#shipping">Shipping</a></aside>
  <main>
{body}
  </main>
  <form action="/subscribe"><label>FORM-NOISE Newsletter</label><input name="email"><button>Go</button></form>
  <footer>FOOTER-NOISE &copy; 2026 Acme Inc. <a href="https://example.org/elsewhere">Partner</a>
    <a href="mailto:help@acme.test">Mail us</a></footer>
  <noscript>NOSCRIPT-NOISE</noscript>
  <script src="/app.js"></script>
</body>
</html>
"""

PAGES: dict[str, tuple[str, str]] = {
    "/": ("Welcome", """
    <h1>Acme Widgets Help Center</h1>
    <p>Find answers about setting up your widget, billing and shipping.</p>
    <p>Start with <a href="/docs/getting-started">Getting started</a> or read the
      <a href="/faq">frequently asked questions</a>. The <a href="/guide.pdf">printable guide</a>
      covers everything offline.</p>
    <img src="/image.png" alt="A widget">
    """),
    "/docs/getting-started": ("Getting started", """
    <article>
    <h1>Getting started</h1>
    <p>Unpack the widget and plug it into a power outlet. The status light blinks blue while the
       widget starts, which takes about thirty seconds.</p>
    <h2>Connecting to Wi-Fi</h2>
    <p>Open the Acme app, tap <strong>Add device</strong> and choose your home network. The widget
       only supports 2.4 GHz networks.</p>
    <ul><li>Keep the widget within ten metres of the router.</li><li>Use a password without emoji.</li></ul>
    <h2>Resetting the widget</h2>
    <p>Hold the reset button for ten seconds until the light turns red. This erases all settings.</p>
    <pre><code>acme-cli reset --factory</code></pre>
    </article>
    <a href="../faq">See the FAQ</a>
    """),
    "/docs/billing": ("Billing", """
    <h1>Billing and invoices</h1>
    <h2>Payment methods</h2>
    <p>We accept credit cards and bank transfers. Invoices are issued on the first day of each month.</p>
    <h2>Refund policy</h2>
    <p>You can request a full refund within 30 days of purchase. Refunds are paid to the original
       payment method within five business days.</p>
    <table><tr><th>Plan</th><th>Price</th></tr><tr><td>Basic</td><td>$5 / month</td></tr>
      <tr><td>Pro</td><td>$15 / month</td></tr></table>
    """),
    "/faq": ("FAQ", """
    <h1>Frequently asked questions</h1>
    <h2>How do I reset my password?</h2>
    <p>Click <em>Forgot password</em> on the sign-in page and follow the link we email you. The link
       expires after one hour.</p>
    <h2 id="shipping">How long does shipping take?</h2>
    <p>Orders ship within two business days. Delivery in Europe takes three to five days.</p>
    <h2>How do I cancel my subscription?</h2>
    <p>Go to Settings, then Subscription, and choose Cancel. You keep access until the end of the
       billing period.</p>
    <p><a href="/docs/billing#refunds">Refunds</a> | <a href="?page=2">More questions</a></p>
    """),
    "/about": ("About", """
    <h1>About Acme</h1>
    <p>Acme Inc. has made widgets since 1999 from its workshop in Lisbon.</p>
    <a href="javascript:void(0)">Nothing</a> <a href="https://example.org/press">Press</a>
    """),
    "/private": ("Private", """
    <h1>Internal only</h1><p>INTERNAL-SECRET: this page must never be imported through a redirect.</p>
    """),
}

PDF_PAGES = [
    ["Acme Widget Printable Guide", "Chapter 1: Safety", "Never submerge the widget in water."],
    ["Chapter 2: Warranty", "The warranty covers manufacturing defects for two years."],
]
PDF_TITLE = "Acme Widget Guide"

NOTES_MD = """# Release notes

## Version 2.0

- New dark mode for the app.
- The widget now supports scheduled timers.

## Version 1.5

Bug fixes for Wi-Fi reconnection.
"""

NOTES_TXT = """Acme support hours

Our support team answers chats Monday to Friday, 9:00 to 17:00 Lisbon time.
Outside those hours, leave a message and we reply the next business day.
"""

PNG_BYTES = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


def _fixed(**response_kwargs):
    """A handler that always returns the same response."""
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(**response_kwargs)
    return handler


class FakeWebsite:
    """The Acme help site described in the module docstring, on 127.0.0.1 and a random port.

    ``ssl_context``: serve HTTPS with this server context (see ``support.fakes.tls``).
    ``extra_pages``: ``{path: html}`` added to (or replacing) the built-in pages, served as-is.
    """

    def __init__(self, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None,
                 extra_pages: dict[str, str] | None = None):
        self.host = host
        self.ssl_context = ssl_context
        self.extra_pages = dict(extra_pages or {})
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def page_paths(self) -> list[str]:
        """The public HTML pages (what a crawler should find), without ``/private``."""
        return [p for p in PAGES if p != "/private"]

    async def __aenter__(self) -> FakeWebsite:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._record])
        r = app.router
        r.add_get("/sitemap.xml", self._sitemap)
        r.add_get("/sitemap_index.xml", self._sitemap_index)
        r.add_get("/robots.txt", self._robots)
        r.add_get("/guide.pdf", self._pdf)
        r.add_get("/notes.md", _fixed(text=NOTES_MD, content_type="text/markdown"))
        r.add_get("/notes.txt", _fixed(text=NOTES_TXT, content_type="text/plain"))
        r.add_get("/image.png", _fixed(body=PNG_BYTES, content_type="image/png"))
        r.add_get("/redirect/local", self._redirect_local)
        r.add_get("/redirect/localhost", self._redirect_localhost)
        r.add_get("/redirect/metadata", _fixed(status=302, headers={
            "Location": "http://169.254.169.254/latest/meta-data/"}))
        r.add_get("/redirect/to", self._redirect_to)
        r.add_get("/redirect/chain/{n:\\d+}", self._chain)
        r.add_get("/redirect/loop", _fixed(status=302, headers={"Location": "/redirect/loop"}))
        r.add_get("/big", self._big)
        r.add_get("/big-declared", self._big_declared)
        r.add_get("/slow", self._slow)
        r.add_get("/status/{code:\\d+}", self._status)
        r.add_route("*", "/echo", self._echo)
        r.add_get("/gzip", self._gzip)
        r.add_get("/{path:.*}", self._page)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._closing:
            self._closing.set()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler):
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        return await handler(request)

    def requested_paths(self) -> list[str]:
        return [path for _method, path, _headers in self.requests]

    @staticmethod
    def _redirect(location: str, status: int = 302) -> web.Response:
        return web.Response(status=status, headers={"Location": location})

    async def _redirect_local(self, _request: web.Request) -> web.Response:
        return self._redirect(f"http://127.0.0.1:{self.port}/private")

    async def _redirect_localhost(self, _request: web.Request) -> web.Response:
        return self._redirect(f"http://localhost:{self.port}/private")

    async def _redirect_to(self, request: web.Request) -> web.Response:
        return self._redirect(request.query["url"])

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    def html(self, path: str) -> str | None:
        """The HTML served at ``path`` (built-in page or extra page), or None."""
        if path in self.extra_pages:
            return self.extra_pages[path]
        if path in PAGES:
            title, body = PAGES[path]
            return _LAYOUT.format(title=title, body=body)
        return None

    async def _page(self, request: web.Request) -> web.Response:
        html = self.html(request.path)
        if html is None:
            return web.Response(status=404, text="not found")
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def _sitemap(self, _request: web.Request) -> web.Response:
        entries = "".join(
            f"  <url><loc>{self.url(path)}</loc><lastmod>2026-11-0{i + 1}</lastmod></url>\n"
            for i, path in enumerate([*self.page_paths(), "/guide.pdf"]))
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n' + entries + "</urlset>\n")
        return web.Response(text=xml, content_type="application/xml")

    async def _sitemap_index(self, _request: web.Request) -> web.Response:
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
               f"  <sitemap><loc>{self.url('/sitemap.xml')}</loc></sitemap>\n</sitemapindex>\n")
        return web.Response(text=xml, content_type="application/xml")

    async def _robots(self, _request: web.Request) -> web.Response:
        return web.Response(text=f"User-agent: *\nDisallow: /private\nSitemap: {self.url('/sitemap.xml')}\n")

    async def _pdf(self, _request: web.Request) -> web.Response:
        return web.Response(body=make_pdf(PDF_PAGES, title=PDF_TITLE), content_type="application/pdf")

    async def _chain(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return self._redirect("/" if n <= 1 else f"/redirect/chain/{n - 1}")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", 6 * 1024 * 1024))
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b"lorem ipsum " * 5000
        sent = 0
        try:
            while sent < size:
                piece = block[: size - sent]
                await resp.write(piece)
                sent += len(piece)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client stopped reading at its cap, as it should
        return resp

    async def _big_declared(self, request: web.Request) -> web.Response:
        size = int(request.query.get("size", 6 * 1024 * 1024))
        return web.Response(body=b"x" * size, content_type="text/plain")

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"<html><body>")
        assert self._closing is not None
        await self._closing.wait()
        return resp

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"method": request.method, "path": request.path_qs,
                                  "headers": dict(request.headers), "body": body.decode("utf-8", "replace")})

    async def _gzip(self, _request: web.Request) -> web.Response:
        html = "<html><head><title>Zipped</title></head><body><p>Compressed page body.</p></body></html>"
        return web.Response(body=gzip.compress(html.encode()), headers={
            "Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"})

    def sitemap_paths(self) -> list[str]:
        """Paths listed in ``/sitemap.xml``."""
        return [*self.page_paths(), "/guide.pdf"]

