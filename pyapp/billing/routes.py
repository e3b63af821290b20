"""Billing routes: the overview and catalog, checkout, portal, downgrade and the Stripe webhook.

Checkout, portal and downgrade are member sessions only (API keys refused) and need an
admin; redirect URLs come from the configured public URL, never the Host header. The
webhook verifies the raw body, re-reads the subscription from Stripe and applies it with
`parley.change_plan` in the same transaction that records the event id (a replay is a no-op).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from typing import Literal

import asyncpg
import stripe
from aiohttp import web
from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.billing.config import billing_config
from pyapp.billing.gateway import Gateway, invoice_subscription
from pyapp.context import POOL, REQUEST_ID, SETTINGS
from pyapp.csv_export import csv_response, stream_csv
from pyapp.db import Actor, tenant_tx
from pyapp.errors import ApiError

log = logging.getLogger("parley.billing")
TAGS = ("billing",)
route = api.group(tags=TAGS)
admin_route = api.group(tags=TAGS, min_role="admin")
# The plan's payments (Checkout, portal, downgrade): an admin's own session, never an API key.
payment_route = api.group(tags=TAGS, min_role="admin", keys=False)
GATEWAY = web.AppKey("billing_gateway", Gateway)

HANDLED = (
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)


class CheckoutIn(BaseModel):
    plan: str = Field(min_length=1, max_length=40, pattern=r"^[a-z_]+$")
    interval: Literal["month", "year"] = "month"
    extra_seats: int = Field(0, ge=0, le=10_000)


class DowngradeIn(BaseModel):
    plan: str = Field("free", min_length=1, max_length=40, pattern=r"^[a-z_]+$")


class UrlOut(BaseModel):
    url: str


def gateway(call_or_request) -> Gateway:
    request = getattr(call_or_request, "request", call_or_request)
    return request.app[GATEWAY]


def _disabled() -> ApiError:
    return ApiError(503, "payments_disabled", "Payments are not enabled on this installation.")


def _stripe_failed(exc: stripe.StripeError) -> ApiError:
    log.warning("stripe call failed: %s", type(exc).__name__)
    return ApiError(502, "payment_provider_error", "The payment provider did not answer; try again.")


def _public_url(call: Call, path: str) -> str:
    return call.settings.base_url.rstrip("/") + path


@route("GET", "/api/billing/plans", summary="The plans on offer")
async def list_plans(call: Call):
    async with call.tx() as conn:
        return {"plans": await conn.fetchval("SELECT parley.plan_catalog()"), "payments_live": gateway(call).live}


@admin_route("GET", "/api/billing", summary="Plan, subscription, meters and warnings")
async def overview(call: Call):
    async with call.tx() as conn:
        out = await conn.fetchval("SELECT parley.billing_overview()")
    out["payments_live"] = gateway(call).live
    return out


@payment_route(
    "POST",
    "/api/billing/checkout",
    body=CheckoutIn,
    response=UrlOut,
    summary="Start a Stripe Checkout for a plan and interval",
)
async def checkout(call: Call):
    gw = gateway(call)
    if not gw.live:
        raise _disabled()
    async with call.tx() as conn:
        catalog = {p["id"]: p for p in await conn.fetchval("SELECT parley.plan_catalog()")}
        plan = catalog.get(call.body.plan)
        if plan is None:
            raise ApiError(422, "unknown_plan", "No such plan.")
        if plan["price_monthly_cents"] == 0:
            raise ApiError(422, "free_plan", "Free plans need no checkout; downgrade instead.")
        if call.body.extra_seats > plan["max_extra_seats"]:
            raise ApiError(422, "too_many_seats", f"This plan allows at most {plan['max_extra_seats']} extra seats.")
        tenant = await conn.fetchrow(
            "SELECT t.id, t.name, s.customer_ref FROM parley.tenants t "
            "LEFT JOIN parley.subscriptions s ON s.tenant_id = t.id "
            "WHERE t.id = parley.current_tenant_id()"
        )
        email = await conn.fetchval("SELECT email FROM parley.users WHERE id = parley.current_user_id()")
    try:
        customer = tenant["customer_ref"]
        if not customer:
            customer = await gw.create_customer(str(tenant["id"]), tenant["name"], email)
            async with call.tx() as conn:
                await conn.execute("SELECT parley.attach_billing_customer($1)", customer)
                customer = await conn.fetchval("SELECT customer_ref FROM parley.subscriptions")
        url = await gw.checkout_session(
            tenant_id=str(tenant["id"]),
            customer=customer,
            plan=plan,
            interval=call.body.interval,
            extra_seats=call.body.extra_seats,
            success_url=_public_url(call, "/console/billing?checkout=done"),
            cancel_url=_public_url(call, "/console/billing?checkout=cancelled"),
        )
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from None
    return {"url": url}


@payment_route("POST", "/api/billing/portal", response=UrlOut, summary="Open the Stripe customer portal")
async def portal(call: Call):
    gw = gateway(call)
    if not gw.live:
        raise _disabled()
    async with call.tx() as conn:
        customer = await conn.fetchval("SELECT customer_ref FROM parley.subscriptions")
    if not customer:
        raise ApiError(409, "no_customer", "There is no billing account yet; choose a plan first.")
    try:
        url = await gw.portal_session(customer, _public_url(call, "/console/billing"))
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from None
    return {"url": url}


@payment_route("POST", "/api/billing/downgrade", body=DowngradeIn, summary="Go down to a free plan")
async def downgrade(call: Call):
    """A paid Stripe subscription is cancelled at its period's end (the webhook then switches);
    otherwise the plan changes now, through parley.change_plan."""
    return await downgrade_tenant(call.request, call.tx, call.body.plan)


async def downgrade_tenant(request: web.Request, tx, plan: str) -> dict:
    gw = gateway(request)
    async with tx() as conn:
        sub = await conn.fetchrow("SELECT provider, status, subscription_ref FROM parley.subscriptions")
        live_sub = (
            sub is not None and sub["provider"] == "stripe" and sub["subscription_ref"] and sub["status"] != "canceled"
        )
        if not (live_sub and gw.live):
            result = await conn.fetchval(
                "SELECT parley.change_plan($1, 'downgrade', $2)", plan, {"provider": "none", "status": "active"}
            )
            return {"scheduled": False, "plan": result["plan"]}
        # Paid through Stripe: the price check in SQL still applies before we touch Stripe.
        if await conn.fetchval("SELECT price_monthly_cents FROM parley.plans WHERE id = $1", plan) != 0:
            raise ApiError(402, "payment_required", "Paid plans are bought through checkout.")
    try:
        updated = await gw.cancel_at_period_end(sub["subscription_ref"])
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from None
    end = gw.state_of(updated, synced_at=dt.datetime.now(dt.UTC))["current_period_end"]
    return {"scheduled": True, "at": end}


def referral_link(settings, code: str) -> str:
    """The share link of a referral code: the sign-up page on the configured public URL."""
    return settings.base_url.rstrip("/") + "/console/sign-up?ref=" + code


@admin_route("GET", "/api/billing/referrals", summary="Your referral link and credits")
async def referrals(call: Call):
    """The share link (`?ref=` on the sign-up page), the credit per paid conversion, the cap, and
    the credits earned and applied to the Stripe balance (sql/94_referrals.sql)."""
    async with call.tx() as conn:
        out = await conn.fetchval("SELECT parley.referral_summary()")
    out["link"] = referral_link(call.settings, out["code"])
    return out


class BrandingIn(BaseModel):
    label: str | None = Field(default=None, max_length=60, description="Null or empty: the server's default.")
    url: str | None = Field(default=None, max_length=2048, description="http(s) link; null: the server's default.")


@admin_route("GET", "/api/branding", summary="Your widgets' default credit line")
async def get_branding(call: Call):
    async with call.tx() as conn:
        return await conn.fetchval("SELECT parley.get_default_branding()")


@admin_route("PUT", "/api/branding", body=BrandingIn, summary="Set your widgets' default credit line (label and link)")
async def put_branding(call: Call):
    """Chatbot override (config.branding.powered_by_label / powered_by_url) → this default → the
    server's; only on plans that allow replacing the Parley branding (sql/96_branding.sql)."""
    async with call.tx() as conn:
        return await conn.fetchval("SELECT parley.set_default_branding($1, $2)", call.body.label, call.body.url)


USAGE_COLUMNS = ("day", "messages", "ai_messages", "conversations", "active_seats")
USAGE_CSV = f"SELECT {', '.join(USAGE_COLUMNS)} FROM parley.usage_days($1, $2)"


class UsageQuery(BaseModel):
    month: str | None = Field(
        # 1970-2999: the year 0000 and the month after 9999-12 are no dates (they were 500s).
        default=None,
        pattern=r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$",
        description="YYYY-MM (UTC, 1970-01 to 2999-12); default this month",
    )
    format: Literal["json", "csv"] = "json"


@route("GET", "/api/billing/usage", query=UsageQuery, summary="Usage per day of a month (JSON or CSV)")
async def usage_feed(call: Call):
    """A calendar month with `month`, else the current allowance period (the subscription's own)."""
    async with call.tx() as conn:
        if call.query.month:
            start = dt.date.fromisoformat(call.query.month + "-01")
            end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        else:
            start, end = await conn.fetchrow("SELECT period_start, period_end FROM parley.allowance_period()")
        if call.query.format == "csv":
            return await stream_csv(
                call.request,
                csv_response(f"usage-{start:%Y-%m}.csv"),
                conn,
                USAGE_CSV,
                start,
                end,
                columns=USAGE_COLUMNS,
                cell=str,
            )
        days = await conn.fetch("SELECT * FROM parley.usage_days($1, $2)", start, end)
        reported = await conn.fetch(
            "SELECT metric, sum(quantity) AS quantity FROM parley.usage_reports "
            "WHERE day >= $1 AND day < $2 GROUP BY metric ORDER BY metric",
            start,
            end,
        )
    return {
        "month": f"{start:%Y-%m}",
        "from": start,
        "to": end,
        "days": [dict(d) for d in days],
        "overage_reported": {r["metric"]: r["quantity"] for r in reported},
    }


# ---------------------------------------------------------------------------------- webhook


async def webhook(request: web.Request) -> web.Response:
    """POST /api/billing/webhook: Stripe events (signature over the raw body, 300 s tolerance)."""
    gw = gateway(request)
    payload = await request.read()
    try:
        event = gw.verify(payload, request.headers.get("Stripe-Signature"))
    except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_signature", "The event signature is not valid.") from None
    kind = event.get("type")
    if kind not in HANDLED:
        return web.json_response({"received": True, "ignored": "event type"})
    if not gw.live:
        # Verified, but nothing can be re-read: let Stripe retry once payments are configured.
        raise _disabled()
    obj = (event.get("data") or {}).get("object") or {}
    if kind == "checkout.session.completed":
        sub_id = obj.get("subscription")
    elif kind.startswith("customer.subscription."):
        sub_id = obj.get("id")
    else:
        sub_id = invoice_subscription(obj)
    if isinstance(sub_id, dict):
        sub_id = sub_id.get("id")
    if not sub_id:
        return web.json_response({"received": True, "ignored": "no subscription"})
    try:
        sub = await gw.subscription(sub_id)
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from None
    tenant = (sub.get("metadata") or {}).get("tenant_id") or obj.get("client_reference_id")
    try:
        tenant_id = uuid.UUID(str(tenant))
    except ValueError:
        return web.json_response({"received": True, "ignored": "no tenant"})
    created = dt.datetime.fromtimestamp(int(event.get("created") or 0), dt.UTC)
    plan, _, _ = gw.plan_of(sub)
    state = gw.state_of(
        sub, synced_at=dt.datetime.now(dt.UTC), delinquent_since=created if kind == "invoice.payment_failed" else None
    )
    if state["status"] == "canceled":
        plan = "free"
    if not plan:
        return web.json_response({"received": True, "ignored": "unknown plan"})
    actor = Actor(tenant_id=tenant_id, kind="service", actor_id="stripe", request_id=request.get(REQUEST_ID))
    try:
        async with tenant_tx(request.app[POOL], actor) as conn:
            if not await conn.fetchval("SELECT parley.claim_billing_event($1, $2, $3)", event["id"], kind, created):
                return web.json_response({"received": True, "duplicate": True})
            customer = await conn.fetchval("SELECT customer_ref FROM parley.subscriptions")
            if customer and state["customer_ref"] and customer != state["customer_ref"]:
                log.warning("stripe event %s names another customer than tenant %s has", event["id"], tenant_id)
                return web.json_response({"received": True, "ignored": "customer mismatch"})
            result = await conn.fetchval("SELECT parley.change_plan($1, 'webhook', $2)", plan, state)
    except asyncpg.PostgresError as exc:
        if getattr(exc, "hint", None) == "tenant_not_found":
            return web.json_response({"received": True, "ignored": "no tenant"})
        raise
    return web.json_response({"received": True, "applied": result["applied"], "plan": result["plan"]})


def server_branding(settings) -> tuple[str | None, str | None]:
    """The installation's default credit line from its environment (PARLEY_BRANDING_LABEL,
    PARLEY_BRANDING_URL; tests pass `extra["server_branding"]`). SQL checks and resolves it."""
    given = settings.extra.get("server_branding")
    if isinstance(given, tuple):
        return given
    return os.environ.get("PARLEY_BRANDING_LABEL") or None, os.environ.get("PARLEY_BRANDING_URL") or None


def setup(app: web.Application) -> None:
    gw = Gateway(billing_config(app[SETTINGS]))
    app[GATEWAY] = gw
    app.router.add_post("/api/billing/webhook", webhook)

    async def sync_branding(app: web.Application):
        await app[POOL].fetchval("SELECT parley.sync_server_branding($1, $2)", *server_branding(app[SETTINGS]))

    app.on_startup.append(sync_branding)

    async def close(app: web.Application):
        await gw.close()

    app.on_cleanup.append(close)
