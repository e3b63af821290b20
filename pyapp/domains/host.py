"""Widget traffic on a custom domain: a request whose Host is an active custom domain may only
load the widget and talk to it (script, widget API, visitor socket, the TLS question), and only
for the chatbots of the tenant the domain routes to (parley.domain_tenant, checked by the widget
session routes through DOMAIN_TENANT). Other Hosts pass untouched: the configured public host,
addresses, and names no tenant has verified."""

from __future__ import annotations

import ipaddress
import uuid
from urllib.parse import urlsplit

from aiohttp import web

from pyapp.context import POOL, SETTINGS
from pyapp.errors import ApiError

DOMAIN_TENANT = web.RequestKey("domain_tenant", uuid.UUID)  # the tenant a custom-domain Host routes to
WIDGET_PATHS = ("/widget.js", "/api/widget/", "/ws/visitor", "/api/domains/check")


def _host_name(request: web.Request) -> str:
    host = (request.host or "").strip().lower()
    if host.startswith("["):
        return ""  # an IPv6 literal
    return host.rsplit(":", 1)[0] if ":" in host else host


def _candidate(request: web.Request, host: str) -> bool:
    if "." not in host or host == (urlsplit(request.app[SETTINGS].public_url or "").hostname or "").lower():
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def _widget_path(path: str) -> bool:
    return path.startswith(WIDGET_PATHS) or (path.startswith("/widget.") and path.endswith(".js"))


@web.middleware
async def custom_domain_host(request: web.Request, handler):
    host = _host_name(request)
    if _candidate(request, host):
        tenant: uuid.UUID | None = await request.app[POOL].fetchval("SELECT parley.domain_tenant($1)", host)
        if tenant is not None:
            if not _widget_path(request.path):
                raise ApiError(404, "not_found", "This domain serves the chat widget only.")
            request[DOMAIN_TENANT] = tenant
    return await handler(request)


def domain_tenant_refuses(request: web.Request, tenant_id: uuid.UUID) -> bool:
    """True when the request came on a custom domain of another tenant than tenant_id."""
    routed = request.get(DOMAIN_TENANT)
    return routed is not None and routed != tenant_id


async def embed_base(conn, request: web.Request) -> str:
    """Where the embed snippet loads the widget from: the tenant's active custom domain (https),
    else the server's own address."""
    from pyapp.widget.assets import base_url

    host = await conn.fetchval("SELECT parley.active_domain()")
    return f"https://{host}" if host else base_url(request)
