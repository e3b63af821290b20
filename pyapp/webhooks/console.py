"""Console page /console/webhooks: endpoints, their health, create (secret shown once), rotate,
test event, enable/disable, delete. The same SQL and checks as /api/webhooks."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from pyapp.channels.envelope import Keyring
from pyapp.console.web import FIRST_VIEW, Ctx, Shown, button, form_page, page
from pyapp.errors import ApiError
from pyapp.outbox import destinations
from pyapp.webhooks.routes import ENDPOINT_MISSING, new_signing_secret, vet

DONE = {"tested": "Test event queued.", "updated": "Endpoint updated.", "deleted": "Endpoint deleted."}


@page("GET", "/console/webhooks", min_role="admin")
async def webhooks(ctx: Ctx, shown: Shown = FIRST_VIEW, created: dict | None = None):
    """The page (GET), or the page again as a form's answer shows it (`created`: a secret shown once)."""
    endpoints = await destinations.listed(ctx.conn, "webhook_endpoint_json", "webhook")
    kinds = await ctx.conn.fetchval("SELECT parley.outbox_event_kinds()")
    return form_page(ctx, "webhooks.html", shown, DONE, endpoints=endpoints, kinds=kinds, created=created)


@page("POST", "/console/webhooks", min_role="admin")
async def create(ctx: Ctx):
    url = (ctx.form.get("url") or "").strip()
    name = (ctx.form.get("name") or "Webhook").strip()
    kinds = [k for k in await ctx.conn.fetchval("SELECT parley.outbox_event_kinds()") if ctx.form.get(f"kind_{k}")]
    form = {"url": url, "name": name, "kinds": kinds}
    try:
        await vet(url)
        endpoint_id = uuid.uuid4()
        async with ctx.savepoint() as conn:
            await conn.fetchval(
                "SELECT parley.create_webhook_endpoint($1, $2, $3, $4, NULL)", endpoint_id, name, url, kinds
            )
            secret = await new_signing_secret(
                conn, Keyring.from_settings(ctx.settings.secret_key), ctx.tenant, endpoint_id, None
            )
    except (ApiError, asyncpg.PostgresError) as exc:
        return await webhooks(ctx, Shown.refused(exc, form))
    return await webhooks(ctx, Shown(status=201), created={"name": name, "secret": secret})


@page("POST", "/console/webhooks/{endpoint_id}/rotate", min_role="admin")
async def rotate(ctx: Ctx):
    endpoint_id = ctx.uuid("endpoint_id")
    await destinations.shown(ctx.conn, "webhook_endpoint_json", endpoint_id, ENDPOINT_MISSING)
    secret = await new_signing_secret(
        ctx.conn, Keyring.from_settings(ctx.settings.secret_key), ctx.tenant, endpoint_id, timedelta(hours=24)
    )
    return await webhooks(ctx, created={"name": "rotated (the old secret stays valid for 24 hours)", "secret": secret})


@button("/console/webhooks/{endpoint_id}/test", "/console/webhooks?done=tested", min_role="admin")
async def test(ctx: Ctx, endpoint_id: uuid.UUID):
    await ctx.conn.fetchval("SELECT parley.send_test_webhook($1)", endpoint_id)


@button("/console/webhooks/{endpoint_id}/enabled", "/console/webhooks?done=updated", min_role="admin")
async def enabled(ctx: Ctx, endpoint_id: uuid.UUID):
    on = ctx.form.get("enabled") == "1"
    await ctx.conn.fetchval("SELECT parley.update_webhook_endpoint($1, NULL, NULL, NULL, $2)", endpoint_id, on)


@button("/console/webhooks/{endpoint_id}/delete", "/console/webhooks?done=deleted", min_role="admin")
async def delete(ctx: Ctx, endpoint_id: uuid.UUID):
    await destinations.delete(ctx.conn, "webhook_endpoint_json", endpoint_id, ENDPOINT_MISSING)
