"""Console page /console/webhooks: endpoints, their health, create (secret shown once), rotate,
test event, enable/disable, delete. The same SQL and checks as /api/webhooks."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from pyapp.channels.envelope import Keyring
from pyapp.console.web import Ctx, page, redirect
from pyapp.errors import ApiError, from_postgres
from pyapp.webhooks.routes import new_signing_secret, vet

_LIST = (
    "SELECT parley.webhook_endpoint_json(d.id) AS e FROM parley.outbox_destinations d"
    " WHERE d.kind = 'webhook' ORDER BY d.created_at, d.id"
)


async def _page(
    ctx: Ctx, *, status: int = 200, created: dict | None = None, error: str | None = None, form: dict | None = None
):
    endpoints = [r["e"] for r in await ctx.conn.fetch(_LIST)]
    kinds = await ctx.conn.fetchval("SELECT parley.outbox_event_kinds()")
    flash = {"tested": "Test event queued.", "updated": "Endpoint updated.", "deleted": "Endpoint deleted."}.get(
        ctx.request.query.get("done", "")
    )
    return ctx.render(
        "webhooks.html",
        status=status,
        endpoints=endpoints,
        kinds=kinds,
        created=created,
        error=error,
        form=form or {},
        flash=flash,
    )


@page("GET", "/console/webhooks", min_role="admin")
async def webhooks(ctx: Ctx):
    return await _page(ctx)


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
    except ApiError as exc:
        return await _page(ctx, status=exc.status, error=exc.message, form=form)
    except asyncpg.PostgresError as exc:
        mapped = from_postgres(exc)
        if mapped is None:
            raise
        return await _page(ctx, status=mapped.status, error=mapped.message, form=form)
    return await _page(ctx, status=201, created={"name": name, "secret": secret})


@page("POST", "/console/webhooks/{endpoint_id}/rotate", min_role="admin")
async def rotate(ctx: Ctx):
    endpoint_id = ctx.uuid("endpoint_id")
    if await ctx.conn.fetchval("SELECT parley.webhook_endpoint_json($1)", endpoint_id) is None:
        raise ApiError(404, "not_found", "No such webhook endpoint.")
    secret = await new_signing_secret(
        ctx.conn, Keyring.from_settings(ctx.settings.secret_key), ctx.tenant, endpoint_id, timedelta(hours=24)
    )
    return await _page(ctx, created={"name": "rotated (the old secret stays valid for 24 hours)", "secret": secret})


@page("POST", "/console/webhooks/{endpoint_id}/test", min_role="admin")
async def test(ctx: Ctx):
    await ctx.conn.fetchval("SELECT parley.send_test_webhook($1)", ctx.uuid("endpoint_id"))
    return redirect("/console/webhooks?done=tested")


@page("POST", "/console/webhooks/{endpoint_id}/enabled", min_role="admin")
async def enabled(ctx: Ctx):
    await ctx.conn.fetchval(
        "SELECT parley.update_webhook_endpoint($1, NULL, NULL, NULL, $2)",
        ctx.uuid("endpoint_id"),
        ctx.form.get("enabled") == "1",
    )
    return redirect("/console/webhooks?done=updated")


@page("POST", "/console/webhooks/{endpoint_id}/delete", min_role="admin")
async def delete(ctx: Ctx):
    endpoint_id = ctx.uuid("endpoint_id")
    if await ctx.conn.fetchval("SELECT parley.webhook_endpoint_json($1)", endpoint_id) is None:
        raise ApiError(404, "not_found", "No such webhook endpoint.")
    await ctx.conn.execute("SELECT parley.delete_destination($1)", endpoint_id)
    return redirect("/console/webhooks?done=deleted")
