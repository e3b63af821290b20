"""An SSRF-guarded HTTP fetcher for URLs that tenants give us (knowledge import, crawling).

Why it is built this way:

* The host is parsed by us, in every form a C resolver would accept (``2130706433``,
  ``0177.0.0.1``, ``0x7f.1``, ``127.1``), so a numeric trick cannot dodge the check.
* The name is resolved once, by us; if ANY address it resolves to is internal the URL is
  refused (an attacker's DNS can mix one public and one private record).
* The connection then goes to exactly those vetted addresses: aiohttp is given a resolver
  that only knows the vetted host, so there is no second lookup to rebind, while the URL
  keeps its name and so Host, SNI and certificate checks stay correct.
* Redirects are followed by hand, and every hop is vetted the same way.
* Bodies are streamed against a byte cap, the whole fetch has one deadline, and the
  content type is checked before the body is read.

Errors are :class:`FetchRefused` (our policy said no) or :class:`FetchFailed` (the remote
side or the network failed); both carry a stable ``code`` for APIs and job records.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from pyapp import tracing

ALLOW_HOSTS_ENV = "PARLEY_FETCH_ALLOW_HOSTS"
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_USER_AGENT = "ParleyBot/1.0 (knowledge import)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``async resolver(host, port) -> addresses`` (IP strings). Injected in tests.
Resolver = Callable[[str, int], Awaitable[Iterable[str]]]


class FetchError(Exception):
    """Base of fetch errors: ``code`` is stable and safe to show; ``message`` explains."""

    def __init__(self, code: str, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.url = url
        self.status = status


class FetchRefused(FetchError):
    """Our policy refused the fetch.

    Codes: ``invalid_url``, ``scheme_not_allowed``, ``address_not_allowed``,
    ``too_many_redirects``, ``bad_content_type``, ``too_large``.
    """


class FetchFailed(FetchError):
    """The network or the remote server failed.

    Codes: ``timeout``, ``http_error`` (status >= 400; see ``status``), ``dns_failed``,
    ``connect_failed``, ``bad_response``.
    """


# ---------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------

_FORBIDDEN_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified / this network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT (includes Alibaba metadata 100.100.100.200)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata 169.254.169.254)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "broadcast"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible IPv6"),
        ("::ffff:0:0/96", "IPv4-mapped IPv6"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments (includes Teredo)"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4 (embeds an IPv4 address)"),
        ("fc00::/7", "unique local (includes AWS metadata fd00:ec2::254)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)


def forbidden_reason(address: str | IPAddress) -> str | None:
    """Why an address must not be contacted, or None when it is a public unicast address.

    The explicit table is the contract (it names the cloud-metadata addresses); Python's
    ``is_global`` is a second net for anything the table forgets.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    for net, why in _FORBIDDEN_NETWORKS:
        if ip.version == net.version and ip in net:
            return why
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global:
        return "not a global address"
    return None


# ---------------------------------------------------------------------------------------
# Host parsing
# ---------------------------------------------------------------------------------------

_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")

# Names refused before any lookup: they are internal by definition, whatever DNS says.
_FORBIDDEN_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "metadata",
        "metadata.google.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_FORBIDDEN_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".intranet", ".lan")


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse IPv4 the way inet_aton and the WHATWG URL spec do: 1–4 parts, each decimal,
    octal (leading 0) or hex (0x); the last part fills the remaining bytes.

    Returns None if the host is not numeric at all; raises ValueError if it is numeric but
    invalid (such hosts must be refused, never looked up as names).
    """
    parts = host.split(".")
    if not parts or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    if len(parts) > 4:
        raise ValueError("too many parts for an IPv4 address")
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if not re.fullmatch(r"[0-7]+", part):
                raise ValueError("invalid octal part")
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part, 10))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError("IPv4 part out of range")
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def parse_host(raw_host: str) -> tuple[str, IPAddress | None]:
    """Canonical form of a URL host: ``(name, None)`` for a DNS name, ``(str(ip), ip)`` for an
    IP literal in any notation. Raises FetchRefused('invalid_url') for hosts that cannot be
    parsed safely (zone ids, bad characters, numeric hosts that are not valid IPv4).
    """
    host = (raw_host or "").strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise FetchRefused("invalid_url", "the URL has no host")
    if ":" in host:
        if "%" in host:
            raise FetchRefused("invalid_url", "IPv6 zone identifiers are not allowed")
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise FetchRefused("invalid_url", f"invalid IPv6 address {raw_host!r}") from None
        return str(ip6), ip6
    host = host.rstrip(".")
    if not host:
        raise FetchRefused("invalid_url", "the URL has no host")
    labels = host.split(".")
    if _NUMERIC_PART.match(labels[-1]):
        # A host whose last label is a number is an IPv4 address or nothing (WHATWG).
        try:
            ip4 = _parse_legacy_ipv4(host)
        except ValueError as exc:
            raise FetchRefused("invalid_url", f"invalid numeric host {raw_host!r}: {exc}") from None
        if ip4 is None:
            raise FetchRefused("invalid_url", f"invalid numeric host {raw_host!r}")
        return str(ip4), ip4
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise FetchRefused("invalid_url", f"invalid host name {raw_host!r}")
    return host, None


def _normalise_allow_entry(entry: str) -> str:
    return entry.strip().lower().strip("[]").rstrip(".")


def allow_hosts_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The test-only allow-list from ``PARLEY_FETCH_ALLOW_HOSTS`` (comma or space separated)."""
    value = (environ if environ is not None else os.environ).get(ALLOW_HOSTS_ENV, "")
    return frozenset(_normalise_allow_entry(e) for e in re.split(r"[,\s]+", value) if e.strip())


# ---------------------------------------------------------------------------------------
# Vetting
# ---------------------------------------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    """All A and AAAA addresses of ``host`` via the system resolver (in the loop's executor)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addr = str(sockaddr[0]).split("%", 1)[0]
            if addr not in seen:
                seen.append(addr)
    return seen


@dataclass(frozen=True)
class VettedURL:
    """A URL that passed the checks, with the exact addresses the connection may use.

    ``url`` is the URL to request: its host is rewritten to the canonical form (an IP
    literal in dotted or bracketed form, a name without a trailing dot) so that what
    aiohttp connects to is exactly what was vetted.
    """

    url: URL
    host: str
    port: int
    addresses: tuple[str, ...]
    allow_listed: bool = False


async def _vet_host(
    raw_host: str, port: int, allow_hosts: Collection[str], resolver: Resolver | None, url_text: str
) -> tuple[str, list[str], bool]:
    """Canonical host, its vetted addresses, and whether the allow-list let it through."""
    written = _normalise_allow_entry(raw_host)
    allow_listed = written in {_normalise_allow_entry(h) for h in allow_hosts}
    host, ip = parse_host(raw_host)
    if ip is not None:
        addresses = [str(ip)]
    else:
        if not allow_listed and (host in _FORBIDDEN_NAMES or host.endswith(_FORBIDDEN_SUFFIXES)):
            raise FetchRefused("address_not_allowed", f"the host {host!r} is internal", url=url_text)
        try:
            addresses = [
                str(ipaddress.ip_address(a.split("%", 1)[0])) for a in await (resolver or system_resolver)(host, port)
            ]
        except FetchError:
            raise
        except (OSError, ValueError) as exc:
            raise FetchFailed("dns_failed", f"could not resolve {host!r}: {exc}", url=url_text) from None
        addresses = list(dict.fromkeys(addresses))
        if not addresses:
            raise FetchFailed("dns_failed", f"{host!r} has no addresses", url=url_text)
    if not allow_listed:
        for address in addresses:
            why = forbidden_reason(address)
            if why:
                raise FetchRefused(
                    "address_not_allowed", f"{host!r} resolves to {address}, which is not allowed ({why})", url=url_text
                )
    return host, addresses, allow_listed


def _parse_url(url: str | URL) -> tuple[URL, int, str]:
    """Form checks that need no DNS: parseable, http(s), absolute, no user info, valid port."""
    try:
        parsed = url if isinstance(url, URL) else URL(str(url))
    except (ValueError, TypeError) as exc:
        raise FetchRefused("invalid_url", f"cannot parse URL: {exc}", url=str(url)) from None
    text = str(url)
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise FetchRefused("scheme_not_allowed", f"only http and https are allowed, not {scheme or 'none'!r}", url=text)
    if not parsed.is_absolute() or not parsed.raw_host:
        raise FetchRefused("invalid_url", "the URL must be absolute with a host", url=text)
    if parsed.raw_user is not None or parsed.raw_password is not None:
        # user@host is a classic way to make a URL look like it goes somewhere else.
        raise FetchRefused("invalid_url", "URLs with user information are not allowed", url=text)
    try:
        port = parsed.port
    except ValueError:
        raise FetchRefused("invalid_url", "invalid port", url=text) from None
    if not port or not 0 < port < 65536:
        raise FetchRefused("invalid_url", "invalid port", url=text)
    return parsed, port, text


def check_url_form(url: str | URL, *, allow_hosts: Collection[str] = frozenset()) -> None:
    """Everything ``vet_url`` checks except DNS: scheme, user info, port, IP-literal hosts in
    any notation, internal names. For validating configuration before anything is resolved."""
    parsed, _port, text = _parse_url(url)
    raw_host = parsed.raw_host or ""  # _parse_url refused URLs without a host
    if _normalise_allow_entry(raw_host) in {_normalise_allow_entry(h) for h in allow_hosts}:
        return
    host, ip = parse_host(raw_host)
    if ip is not None:
        why = forbidden_reason(ip)
        if why:
            raise FetchRefused("address_not_allowed", f"{host} is not allowed ({why})", url=text)
    elif host in _FORBIDDEN_NAMES or host.endswith(_FORBIDDEN_SUFFIXES):
        raise FetchRefused("address_not_allowed", f"the host {host!r} is internal", url=text)


async def vet_url(
    url: str | URL, *, allow_hosts: Collection[str] = frozenset(), resolver: Resolver | None = None
) -> VettedURL:
    """Check one URL (one hop): scheme, host form, name, every resolved address.

    ``allow_hosts`` (test hosts only) matches the host exactly as written (lowercased,
    without a trailing dot): allowing ``127.0.0.1`` does not allow ``2130706433``.
    """
    parsed, port, text = _parse_url(url)
    host, addresses, allow_listed = await _vet_host(parsed.raw_host or "", port, allow_hosts, resolver, text)
    request_url = parsed if parsed.raw_host == host else parsed.with_host(host)
    return VettedURL(url=request_url, host=host, port=port, addresses=tuple(addresses), allow_listed=allow_listed)


def _resolved(host: str, port: int, addresses: Iterable[str]) -> list[ResolveResult]:
    """Vetted addresses in the form aiohttp's connector takes from a resolver (numeric: no lookup)."""
    return [
        {
            "hostname": host,
            "host": a,
            "port": port,
            "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
            "proto": 0,
            "flags": socket.AI_NUMERICHOST,
        }
        for a in addresses
    ]


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp's lookups from the vetted table only: no second DNS query can happen."""

    def __init__(self) -> None:
        self._pins: dict[str, tuple[str, ...]] = {}

    def pin(self, host: str, addresses: tuple[str, ...]) -> None:
        self._pins[host] = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        addresses = self._pins.get(host.lower().rstrip("."))
        if addresses is None:
            raise OSError(f"refusing to resolve unvetted host {host!r}")
        return _resolved(host, port, addresses)

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------


@dataclass
class FetchResult:
    """A completed fetch. ``url`` is the final URL; ``redirects`` the hops that led to it."""

    url: str
    status: int
    content_type: str
    charset: str | None
    headers: dict[str, str]
    body: bytes
    redirects: list[str] = field(default_factory=list)

    def text(self, default_charset: str = "utf-8") -> str:
        """Body decoded with the declared charset (falling back to UTF-8, never raising)."""
        for charset in (self.charset, default_charset):
            if charset:
                try:
                    return self.body.decode(charset, errors="replace")
                except LookupError:
                    continue
        return self.body.decode("utf-8", errors="replace")


def _media_type_allowed(media_type: str, allowed: Collection[str]) -> bool:
    for pattern in allowed:
        pattern = pattern.lower().strip()
        if pattern == media_type or pattern == "*/*":
            return True
        if pattern.endswith("/*") and media_type.startswith(pattern[:-1]):
            return True
    return False


class SafeFetcher:
    """Fetches tenant-supplied URLs safely. One instance can serve many fetches.

    ``allow_hosts``: hosts exempt from the address check, for tests that import from a site
    on 127.0.0.1. None means "read ``PARLEY_FETCH_ALLOW_HOSTS``" (unset in production).
    ``resolver``: ``async (host, port) -> [ip, ...]``; defaults to the system resolver.
    ``ssl``: an ``ssl.SSLContext`` to trust extra CAs (tests); default verification otherwise.
    """

    def __init__(
        self,
        *,
        allow_hosts: Collection[str] | None = None,
        resolver: Resolver | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        user_agent: str = DEFAULT_USER_AGENT,
        ssl=None,
    ):
        self.allow_hosts = (
            frozenset(_normalise_allow_entry(h) for h in allow_hosts)
            if allow_hosts is not None
            else allow_hosts_from_env()
        )
        self.resolver = resolver
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.ssl = ssl

    async def fetch(
        self,
        url: str,
        *,
        allowed_types: Collection[str] | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        data: bytes | None = None,
        follow_redirects: bool = True,
    ) -> FetchResult:
        """Fetch ``url`` and return the whole (capped) body.

        ``allowed_types``: media types such as ``text/html`` or ``text/*``; None allows any.
        ``follow_redirects=False`` returns a 3xx response as it is (for webhook-style sends).
        """
        deadline = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(deadline):
                return await self._fetch(
                    url,
                    allowed_types=allowed_types,
                    max_bytes=self.max_bytes if max_bytes is None else max_bytes,
                    headers=headers,
                    method=method.upper(),
                    data=data,
                    follow_redirects=follow_redirects,
                )
        except TimeoutError:
            raise FetchFailed("timeout", f"no complete response within {deadline:g}s", url=url) from None

    async def _fetch(
        self, url: str, *, allowed_types, max_bytes: int, headers, method: str, data, follow_redirects: bool
    ) -> FetchResult:
        pinned = _PinnedResolver()
        connector = aiohttp.TCPConnector(
            resolver=pinned, use_dns_cache=False, ssl=self.ssl if self.ssl is not None else True
        )
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)
        request_headers = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"}
        request_headers.update(headers or {})
        redirects: list[str] = []
        current = url
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=client_timeout,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        ) as session:
            while True:
                vetted = await vet_url(current, allow_hosts=self.allow_hosts, resolver=self.resolver)
                pinned.pin(vetted.host, vetted.addresses)
                try:
                    async with session.request(
                        method, vetted.url, headers=request_headers, data=data, allow_redirects=False
                    ) as resp:
                        if resp.status in REDIRECT_STATUSES and follow_redirects:
                            location = resp.headers.get("Location")
                            if not location:
                                raise FetchFailed(
                                    "bad_response",
                                    f"redirect {resp.status} without Location",
                                    url=current,
                                    status=resp.status,
                                )
                            try:
                                target = vetted.url.join(URL(location))
                            except ValueError as exc:
                                raise FetchRefused("invalid_url", f"bad redirect target: {exc}", url=current) from None
                            redirects.append(current)
                            if len(redirects) > self.max_redirects:
                                raise FetchRefused(
                                    "too_many_redirects", f"more than {self.max_redirects} redirects", url=url
                                )
                            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                                method, data = "GET", None
                            if target.host != vetted.url.host:
                                # Credentials meant for one host must not follow a redirect to another.
                                request_headers = {
                                    k: v
                                    for k, v in request_headers.items()
                                    if k.lower() not in ("authorization", "cookie")
                                }
                            current = str(target)
                            continue
                        return await self._read(resp, current, redirects, allowed_types, max_bytes)
                except FetchError:
                    raise
                except TimeoutError:
                    raise FetchFailed("timeout", "the connection or response timed out", url=current) from None
                except aiohttp.InvalidURL as exc:
                    raise FetchRefused("invalid_url", str(exc), url=current) from None
                except aiohttp.ClientPayloadError as exc:
                    raise FetchFailed("bad_response", f"response body broken: {exc}", url=current) from None
                except aiohttp.ClientResponseError as exc:
                    raise FetchFailed("bad_response", f"malformed response: {exc.message}", url=current) from None
                except (aiohttp.ClientError, OSError) as exc:
                    raise FetchFailed("connect_failed", f"could not connect: {exc}", url=current) from None

    @staticmethod
    async def _read(
        resp: aiohttp.ClientResponse,
        url: str,
        redirects: list[str],
        allowed_types: Collection[str] | None,
        max_bytes: int,
    ) -> FetchResult:
        if resp.status >= 400:
            raise FetchFailed("http_error", f"HTTP {resp.status}", url=url, status=resp.status)
        media_type = (resp.content_type or "application/octet-stream").lower()
        if allowed_types is not None and not _media_type_allowed(media_type, allowed_types):
            raise FetchRefused(
                "bad_content_type", f"content type {media_type!r} is not accepted here", url=url, status=resp.status
            )
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise FetchRefused(
                "too_large",
                f"{resp.content_length} bytes exceeds the {max_bytes}-byte limit",
                url=url,
                status=resp.status,
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            body.extend(chunk)
            if len(body) > max_bytes:
                raise FetchRefused("too_large", f"body exceeds the {max_bytes}-byte limit", url=url, status=resp.status)
        return FetchResult(
            url=url,
            status=resp.status,
            content_type=media_type,
            charset=resp.charset,
            headers={k: v for k, v in resp.headers.items()},
            body=bytes(body),
            redirects=list(redirects),
        )


async def safe_fetch(
    url: str, *, allow_hosts: Collection[str] | None = None, resolver: Resolver | None = None, **kwargs
) -> FetchResult:
    """One-off fetch with default limits; keyword arguments are those of ``SafeFetcher.fetch``."""
    return await SafeFetcher(allow_hosts=allow_hosts, resolver=resolver).fetch(url, **kwargs)


# ---------------------------------------------------------------------------------------
# A guarded aiohttp session, for streaming clients that cannot use SafeFetcher.fetch
# ---------------------------------------------------------------------------------------


class _GuardedResolver(AbstractResolver):
    """Resolves and vets in one step at connect time, so aiohttp connects only to vetted addresses."""

    def __init__(self, allow_hosts: frozenset[str], resolver: Resolver | None):
        self.allow_hosts = allow_hosts
        self.resolver = resolver

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        _name, addresses, _allowed = await _vet_host(host, port, self.allow_hosts, self.resolver, host)
        return _resolved(host, port, addresses)

    async def close(self) -> None:
        return None


def guarded_session(
    *, allow_hosts: Collection[str] | None = None, resolver: Resolver | None = None, ssl=None, **session_kwargs
) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` that refuses internal destinations, for clients that need
    a raw session (streaming LLM calls to a tenant-configured base URL).

    Names are resolved and vetted by the connector itself (the address connected to is the
    address checked, so DNS rebinding has no window); IP literals and every redirect
    target are vetted by trace hooks before the request is sent. Refusals raise
    :class:`FetchRefused`. ``allow_hosts`` None reads ``PARLEY_FETCH_ALLOW_HOSTS``.
    """
    allow = (
        frozenset(_normalise_allow_entry(h) for h in allow_hosts) if allow_hosts is not None else allow_hosts_from_env()
    )

    async def on_request_start(_session, _ctx, params: aiohttp.TraceRequestStartParams) -> None:
        check_url_form(params.url, allow_hosts=allow)

    async def on_request_redirect(_session, _ctx, params: aiohttp.TraceRequestRedirectParams) -> None:
        location = params.response.headers.get("Location", "")
        await vet_url(params.url.join(URL(location)), allow_hosts=allow, resolver=resolver)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    trace.on_request_redirect.append(on_request_redirect)
    connector = aiohttp.TCPConnector(
        resolver=_GuardedResolver(allow, resolver), use_dns_cache=False, ssl=ssl if ssl is not None else True
    )
    session_kwargs.setdefault("trust_env", False)
    return aiohttp.ClientSession(connector=connector, trace_configs=[trace, *request_spans()], **session_kwargs)


def request_spans() -> list[aiohttp.TraceConfig]:
    """For an ``aiohttp.ClientSession``'s ``trace_configs``: with traces on (when the session is
    made), a client span per request made under a span (an outbox send, a bot turn): method and host
    only (a path may hold a token, as Telegram's does), the answer's status. Nothing when off."""
    if not tracing.enabled():
        return []
    trace = aiohttp.TraceConfig()

    async def start(_session, ctx, params: aiohttp.TraceRequestStartParams) -> None:
        ctx.span = tracing.start_client_span(
            f"HTTP {params.method}", **{"http.request.method": params.method, "server.address": params.url.host}
        )

    async def end(_session, ctx, params: aiohttp.TraceRequestEndParams) -> None:
        tracing.end_client_span(getattr(ctx, "span", None), status_code=params.response.status)

    async def failed(_session, ctx, params: aiohttp.TraceRequestExceptionParams) -> None:
        tracing.end_client_span(getattr(ctx, "span", None), error=params.exception)

    trace.on_request_start.append(start)
    trace.on_request_end.append(end)
    trace.on_request_exception.append(failed)
    return [trace]
