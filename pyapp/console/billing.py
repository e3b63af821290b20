"""The billing page: plan cards (monthly/annual), meters against allowances, warnings, checkout,
the customer portal and the downgrade to Free. The work is the billing surface's own handlers
(pyapp.billing.routes) and SQL (parley.billing_overview, parley.change_plan)."""

from __future__ import annotations

from aiohttp import web

from pyapp.billing import routes as billing
from pyapp.console import queries
from pyapp.console.accounts_bridge import _call
from pyapp.console.web import Ctx, page, redirect, sql_refusal
from pyapp.errors import ApiError

DONE = {
    "downgraded": "You are on the Free plan now.",
    "scheduled": "Your subscription ends with the paid period; Free applies after that.",
    "done": "Thank you! Your plan changes as soon as the payment is confirmed.",
    "cancelled": "Checkout cancelled; nothing changed.",
    "branding": "Your widgets' credit line is saved.",
}


async def _page(ctx: Ctx, *, status: int = 200, error: str | None = None):
    overview = await ctx.conn.fetchval("SELECT parley.billing_overview()")
    plans = await ctx.conn.fetchval("SELECT parley.plan_catalog()")
    usage = await queries.fetch(ctx.conn, "usage_30_days")
    referral = await ctx.conn.fetchval("SELECT parley.referral_summary()")
    referral["link"] = billing.referral_link(ctx.settings, referral["code"])
    branding = await ctx.conn.fetchval("SELECT parley.get_default_branding()")
    key = ctx.request.query.get("done") or ctx.request.query.get("checkout") or ""
    return ctx.render(
        "billing.html",
        status=status,
        o=overview,
        plans=plans,
        usage=usage,
        referral=referral,
        branding=branding,
        error=error,
        live=billing.gateway(ctx.request).live,
        flash=DONE.get(key),
    )


@page("GET", "/console/billing", min_role="admin")
async def billing_page(ctx: Ctx):
    return await _page(ctx)


def _external(url: str) -> web.Response:
    """303 to the payment provider's page (a URL Stripe returned, not user input)."""
    return web.Response(status=303, headers={"Location": url, "Cache-Control": "no-store"})


@page("POST", "/console/billing/checkout", min_role="admin")
async def checkout(ctx: Ctx):
    try:
        body = billing.CheckoutIn.model_validate(
            {
                "plan": str(ctx.form.get("plan", "")),
                "interval": str(ctx.form.get("interval", "month")),
                "extra_seats": str(ctx.form.get("extra_seats") or 0),
            }
        )
    except ValueError:
        return await _page(ctx, status=422, error="Choose a plan, an interval and a number of extra seats.")
    try:
        out = await billing.checkout(_call(ctx.request, body, session=ctx.session, min_role="admin"))
    except ApiError as exc:
        return await _page(ctx, status=exc.status, error=exc.message)
    return _external(out["url"])


@page("POST", "/console/billing/portal", min_role="admin")
async def portal(ctx: Ctx):
    try:
        out = await billing.portal(_call(ctx.request, session=ctx.session, min_role="admin"))
    except ApiError as exc:
        return await _page(ctx, status=exc.status, error=exc.message)
    return _external(out["url"])


@page("POST", "/console/billing/downgrade", min_role="admin", tx=False)
async def downgrade(ctx: Ctx):
    try:
        out = await billing.downgrade_tenant(ctx.request, lambda: ctx.tx("admin"), "free")
    except ApiError as exc:
        async with ctx.tx("admin") as conn:
            ctx.conn = conn
            return await _page(ctx, status=exc.status, error=exc.message)
    return redirect("/console/billing?done=" + ("scheduled" if out["scheduled"] else "downgraded"))


@page("POST", "/console/billing/branding", min_role="admin")
async def branding(ctx: Ctx):
    """The workspace's default credit line (parley.set_default_branding: the rules and the plan check)."""
    try:
        async with sql_refusal(ctx.conn) as conn:
            await conn.fetchval(
                "SELECT parley.set_default_branding($1, $2)",
                str(ctx.form.get("label", ""))[:200],
                str(ctx.form.get("url", ""))[:2048],
            )
    except ApiError as exc:
        return await _page(ctx, status=exc.status, error=exc.message)
    return redirect("/console/billing?done=branding")
