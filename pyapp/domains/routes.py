"""Custom domain routes: claim, list, verify (a DNS check), remove; staff force/disable; and the
question a reverse proxy's on-demand TLS asks before it gets a certificate for a name."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.billing.staff import in_tenant, staff_route, staff_tx, tenant_route
from pyapp.context import POOL, SETTINGS
from pyapp.domains.dns import DomainDns, domain_config
from pyapp.domains.host import custom_domain_host
from pyapp.errors import ApiError

TAGS = ("domains",)
route = api.group(min_role="admin", tags=TAGS)
DNS = web.AppKey("domain_dns", DomainDns)


class DomainIn(BaseModel):
    hostname: str = Field(min_length=1, max_length=253)


class CheckQuery(BaseModel):
    domain: str = Field(min_length=1, max_length=253)


class StaffDomainsQuery(BaseModel):
    q: str = Field("", max_length=253)
    limit: int = Field(100, ge=1, le=500)


class StaffDomainIn(BaseModel):
    status: Literal["active", "disabled"]
    reason: str | None = Field(default=None, max_length=200)


def routing(request: web.Request, domain: dict | None) -> dict | None:
    """The domain with the routing record to create beside its TXT: a CNAME to the target."""
    if domain is None:
        return None
    config = request.app[DNS].config
    domain["cname"] = {"name": domain["hostname"], "value": config.target}
    domain["a_fallback"] = list(config.addresses)
    return domain


def _found(domain: dict | None) -> dict:
    if domain is None:
        raise ApiError(404, "not_found", "No such domain.")
    return domain


@route("GET", "/api/domains", summary="Your custom domains and their DNS records")
async def list_domains(call: Call):
    async with call.tx() as conn:
        rows = await conn.fetch("SELECT parley.custom_domain_json(hostname) AS d FROM parley.custom_domains ORDER BY 1")
        allowed = await conn.fetchval(
            "SELECT allow_custom_domain FROM parley.effective_limits(parley.current_tenant_id())"
        )
    return {"allowed": allowed, "domains": [routing(call.request, r["d"]) for r in rows]}


@route("POST", "/api/domains", body=DomainIn, status=201, summary="Claim a custom domain")
async def claim(call: Call):
    async with call.tx() as conn:
        return routing(call.request, await conn.fetchval("SELECT parley.claim_domain($1)", call.body.hostname))


@route("POST", "/api/domains/{hostname}/verify", summary="Check the DNS records now")
async def verify(call: Call):
    """Ask the resolver for the TXT and routing records; SQL decides and activates."""
    return await verify_domain(call.request, call.tx, call.request.match_info["hostname"])


async def verify_domain(request: web.Request, tx, hostname: str) -> dict:
    checker = request.app[DNS]
    async with tx() as conn:
        domain = _found(
            await conn.fetchval("SELECT parley.custom_domain_json(parley.normalize_hostname($1))", hostname)
        )
    observed = await checker.observe(domain["hostname"], domain["txt"]["name"])
    expected = await checker.expected()
    async with tx() as conn:
        out = await conn.fetchval(
            "SELECT parley.record_domain_check($1, $2, $3)", domain["hostname"], observed, expected
        )
    return _found(routing(request, out))


@route("DELETE", "/api/domains/{hostname}", status=204, summary="Remove a domain")
async def remove(call: Call):
    async with call.tx() as conn:
        if not await conn.fetchval("SELECT parley.remove_domain($1)", call.request.match_info["hostname"]):
            raise ApiError(404, "not_found", "No such domain.")
    return None


@staff_route("GET", "/api/staff/domains", query=StaffDomainsQuery, summary="Staff: custom domains of every workspace")
async def staff_list(call: Call):
    async with staff_tx(call) as conn:
        return {"domains": await conn.fetchval("SELECT parley.staff_domains($1, $2)", call.query.q, call.query.limit)}


@tenant_route("POST", "/domains/{hostname}", body=StaffDomainIn, summary="Staff: force a domain active or disable it")
async def staff_set(call: Call):
    async with in_tenant(call) as conn:
        out = await conn.fetchval(
            "SELECT parley.staff_set_domain($1, $2, $3)",
            call.request.match_info["hostname"],
            call.body.status,
            call.body.reason,
        )
    return routing(call.request, out)


async def tls_check(request: web.Request) -> web.Response:
    """GET /api/domains/check?domain=: 200 only for an active custom domain (a reverse proxy's
    on-demand TLS `ask` endpoint), 404 otherwise; no body worth reading either way."""
    domain = request.query.get("domain", "")
    if not domain or len(domain) > 253:
        raise ApiError(400, "invalid_domain", "Give ?domain=<host name>.")
    tenant = await request.app[POOL].fetchval("SELECT parley.domain_tenant($1)", domain)
    if tenant is None:
        return web.json_response({"domain": domain, "active": False}, status=404)
    return web.json_response({"domain": domain, "active": True})


def setup(app: web.Application) -> None:
    app[DNS] = DomainDns(domain_config(app[SETTINGS]))
    app.middlewares.append(custom_domain_host)
    app.router.add_get("/api/domains/check", tls_check)
