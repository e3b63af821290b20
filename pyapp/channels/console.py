"""Console page /console/alerts: every chatbot's alert channels, add one (e-mail or Slack), send a
test alert, delete. Same SQL and checks as /api/chatbots/{id}/alerts."""

from __future__ import annotations

import uuid

import asyncpg

from pyapp.channels.alerts import ALERT_MISSING, add_alert_channel, vet_alert_target
from pyapp.channels.envelope import Keyring
from pyapp.console.web import FIRST_VIEW, Ctx, Shown, button, form_page, page, redirect
from pyapp.errors import ApiError
from pyapp.outbox import destinations

_LIST = (
    "SELECT parley.alert_channel_json(d.id) AS a, c.name AS chatbot_name FROM parley.outbox_destinations d"
    " JOIN parley.chatbots c ON c.tenant_id = d.tenant_id AND c.id = d.chatbot_id"
    " WHERE d.kind IN ('email', 'slack') ORDER BY c.name, d.created_at, d.id"
)


DONE = {"tested": "Test alert queued.", "deleted": "Alert channel deleted.", "added": "Alert channel added."}


@page("GET", "/console/alerts", min_role="admin")
async def alerts(ctx: Ctx, shown: Shown = FIRST_VIEW):
    """The page (GET), or the page again as a form's answer shows it."""
    alerts = [{**r["a"], "chatbot_name": r["chatbot_name"]} for r in await ctx.conn.fetch(_LIST)]
    chatbots = await ctx.conn.fetch("SELECT id, name FROM parley.chatbots WHERE deleted_at IS NULL ORDER BY name")
    events = await ctx.conn.fetchval("SELECT parley.alert_event_kinds()")
    return form_page(ctx, "alerts.html", shown, DONE, alerts=alerts, chatbots=chatbots, events=events)


@page("POST", "/console/alerts", min_role="admin")
async def create(ctx: Ctx):
    f = ctx.form
    kind = f.get("kind") or "email"
    events = [e for e in await ctx.conn.fetchval("SELECT parley.alert_event_kinds()") if f.get(f"event_{e}")]
    form = {"kind": kind, "email": f.get("email", ""), "chatbot_id": f.get("chatbot_id", ""), "events": events}
    try:
        try:
            chatbot_id = uuid.UUID(f.get("chatbot_id", ""))
        except ValueError:
            raise ApiError(422, "invalid_chatbot", "Choose a chatbot.") from None
        await vet_alert_target(kind, f.get("email"), f.get("slack_webhook_url"))
        async with ctx.savepoint() as conn:
            await add_alert_channel(
                conn,
                Keyring.from_settings(ctx.settings.secret_key),
                ctx.tenant,
                chatbot_id,
                kind,
                (f.get("name") or "Alerts").strip() or "Alerts",
                f.get("email"),
                f.get("slack_webhook_url"),
                events,
            )
    except (ApiError, asyncpg.PostgresError) as exc:
        return await alerts(ctx, Shown.refused(exc, form))
    return redirect("/console/alerts?done=added")


@button("/console/alerts/{alert_id}/test", "/console/alerts?done=tested", min_role="admin")
async def test(ctx: Ctx, alert_id: uuid.UUID):
    await ctx.conn.fetchval("SELECT parley.send_test_alert($1)", alert_id)


@button("/console/alerts/{alert_id}/delete", "/console/alerts?done=deleted", min_role="admin")
async def delete(ctx: Ctx, alert_id: uuid.UUID):
    await destinations.delete(ctx.conn, "alert_channel_json", alert_id, ALERT_MISSING)
