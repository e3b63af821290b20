"""Console page /console/outbox: destinations' health, the delivery log, replay and resume (admins)."""

from __future__ import annotations

from pyapp.console.web import Ctx, page, redirect
from pyapp.errors import ApiError

STATUSES = ("pending", "delivered", "failed", "dead", "replayed")


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and int(value) < 2**63 else None


@page("GET", "/console/outbox", min_role="admin")
async def outbox(ctx: Ctx):
    q = ctx.request.query
    status = q.get("status") if q.get("status") in STATUSES else None
    destination = None
    if q.get("destination"):
        try:
            import uuid

            destination = uuid.UUID(q["destination"])
        except ValueError:
            destination = None
    destinations = await ctx.conn.fetch("SELECT * FROM parley.list_destinations()")
    deliveries = await ctx.conn.fetch(
        "SELECT * FROM parley.list_deliveries($1, $2, $3, 100)", destination, status, _int(q.get("before_id"))
    )
    flash = {"replayed": "Queued again.", "resumed": "Destination resumed."}.get(q.get("done", ""))
    return ctx.render(
        "outbox.html",
        destinations=destinations,
        deliveries=deliveries,
        chosen_status=status,
        destination=destination,
        statuses=STATUSES,
        flash=flash,
    )


@page("GET", "/console/outbox/deliveries/{delivery_id}", min_role="admin")
async def delivery(ctx: Ctx):
    delivery_id = _int(ctx.request.match_info["delivery_id"])
    if delivery_id is None:
        raise ApiError(404, "not_found", "No such delivery.")
    row = await ctx.conn.fetchval("SELECT parley.get_delivery($1)", delivery_id)
    return ctx.render("outbox_delivery.html", d=row)


@page("POST", "/console/outbox/deliveries/{delivery_id}/replay", min_role="admin")
async def replay(ctx: Ctx):
    delivery_id = _int(ctx.request.match_info["delivery_id"])
    if delivery_id is None:
        raise ApiError(404, "not_found", "No such delivery.")
    await ctx.conn.fetchval("SELECT parley.replay_delivery($1)", delivery_id)
    return redirect("/console/outbox?done=replayed")


@page("POST", "/console/outbox/destinations/{destination_id}/replay", min_role="admin")
async def replay_all(ctx: Ctx):
    await ctx.conn.fetchval(
        "SELECT parley.replay_dead_letters($1, $2)", ctx.uuid("destination_id"), ctx.form.get("include_failed") == "1"
    )
    return redirect("/console/outbox?done=replayed")


@page("POST", "/console/outbox/destinations/{destination_id}/resume", min_role="admin")
async def resume(ctx: Ctx):
    await ctx.conn.execute("SELECT parley.resume_destination($1)", ctx.uuid("destination_id"))
    return redirect("/console/outbox?done=resumed")
