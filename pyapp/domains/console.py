"""Console → Custom domain (admins): claim a host name, the DNS records to create, "Verify", remove.
The work is SQL's (sql/95_domains.sql) and the API's own DNS check (pyapp.domains.routes).

Back-office → Domains (/console/staff/domains, staff only: PARLEY_ADMIN_EMAILS, checked in SQL): every
workspace's domains, force one active or disable it (parley.staff_set_domain, audited in the
workspace's trail with actor staff)."""

from __future__ import annotations

from urllib.parse import quote

import asyncpg

from pyapp.billing.staff import staff_in_tenant, staff_transaction
from pyapp.console.web import Ctx, done_flash, page, redirect, refusal, sql_refusal
from pyapp.domains import routes as domains
from pyapp.errors import ApiError, from_postgres

DONE = {"removed": "Domain removed.", "claimed": "Domain added: create the two DNS records below, then verify."}


async def _page(ctx: Ctx, *, status: int = 200, error: str | None = None, flash: str | None = None):
    rows = await ctx.conn.fetch("SELECT parley.custom_domain_json(hostname) AS d FROM parley.custom_domains ORDER BY 1")
    allowed = await ctx.conn.fetchval(
        "SELECT allow_custom_domain FROM parley.effective_limits(parley.current_tenant_id())"
    )
    return ctx.render(
        "domains.html",
        status=status,
        domains=[domains.routing(ctx.request, r["d"]) for r in rows],
        allowed=allowed,
        error=error,
        flash=flash or DONE.get(ctx.request.query.get("done", "")),
    )


@page("GET", "/console/domains", min_role="admin")
async def domains_page(ctx: Ctx):
    return await _page(ctx)


@page("POST", "/console/domains", min_role="admin")
async def claim(ctx: Ctx):
    try:
        async with sql_refusal(ctx.conn) as conn:
            await conn.fetchval("SELECT parley.claim_domain($1)", str(ctx.form.get("hostname", ""))[:253])
    except ApiError as exc:
        return await _page(ctx, status=exc.status, error=exc.message)
    return redirect("/console/domains?done=claimed")


@page("POST", "/console/domains/verify", min_role="admin", tx=False)
async def verify(ctx: Ctx):
    hostname = str(ctx.form.get("hostname", ""))[:253]
    try:
        out = await domains.verify_domain(ctx.request, lambda: ctx.tx("admin"), hostname)
        error, flash = (
            None,
            (
                f"{out['hostname']} is active."
                if out["status"] == "active"
                else "Not verified yet: see what the DNS shows."
            ),
        )
    except asyncpg.PostgresError as exc:
        refused = from_postgres(exc)
        if refused is None:
            raise
        error, flash = refused.message, None
    except ApiError as exc:
        error, flash = exc.message, None
    async with ctx.tx("admin") as conn:
        ctx.conn = conn
        return await _page(ctx, error=error, flash=flash)


@page("POST", "/console/domains/remove", min_role="admin")
async def remove(ctx: Ctx):
    await ctx.conn.fetchval("SELECT parley.remove_domain($1)", str(ctx.form.get("hostname", ""))[:253])
    return redirect("/console/domains?done=removed")


STAFF_DONE = {"active": "Domain forced active.", "disabled": "Domain disabled."}


async def _staff_page(ctx: Ctx, *, status: int = 200, error: str | None = None, flash: str | None = None):
    query = str(ctx.request.query.get("q", ctx.form.get("q", "")))[:253]
    async with staff_transaction(ctx.pool, ctx.request, ctx.user_id, ctx.claims.session_id) as conn:
        found = await conn.fetchval("SELECT parley.staff_domains($1, 200)", query)
    return ctx.render("staff_domains.html", status=status, domains=found, q=query, error=error, flash=flash)


@page("GET", "/console/staff/domains", tx=False)
async def staff_domains_page(ctx: Ctx):
    return await _staff_page(ctx, flash=done_flash(ctx, STAFF_DONE))


@page("POST", "/console/staff/domains", tx=False)
async def staff_set_domain(ctx: Ctx):
    """Force a workspace's domain active (no DNS check) or disable it, as staff inside that workspace."""
    tenant_id = ctx.form_uuid("tenant_id", "No such workspace.")
    hostname = str(ctx.form.get("hostname", ""))[:253]
    status = str(ctx.form.get("status", ""))
    reason = str(ctx.form.get("reason", "")).strip()[:200] or None
    try:
        async with staff_in_tenant(ctx.pool, ctx.request, tenant_id, ctx.user_id, ctx.claims.session_id) as conn:
            await conn.fetchval("SELECT parley.staff_set_domain($1, $2, $3)", hostname, status, reason)
    except asyncpg.PostgresError as exc:
        refused = refusal(exc)
        return await _staff_page(ctx, status=refused.status, error=refused.message)
    return redirect(f"/console/staff/domains?done={quote(status)}&q={quote(str(ctx.form.get('q', ''))[:253])}")
