"""Alert channels per chatbot API: e-mail or Slack on handoff requests, new leads, negative
feedback; list, delete, test-send. Rules in sql/83_alerts.sql; the Slack URL is vetted here by
the SSRF guard and sealed (pyapp/channels/envelope), never stored or shown in clear."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.channels.envelope import Keyring, store_secret
from pyapp.conversations.routes import Strict
from pyapp.errors import ApiError
from pyapp.outbox import destinations
from pyapp.webhooks.routes import vet

TAGS = ("alerts",)
AlertEvent = Literal["human_requested", "lead_captured", "negative_feedback"]


class AlertIn(Strict):
    kind: Literal["email", "slack"]
    name: str = Field("Alerts", min_length=1, max_length=100)
    email: str | None = Field(default=None, max_length=320, description="kind email: the address")
    slack_webhook_url: str | None = Field(
        default=None, max_length=2048, description="kind slack: the incoming-webhook URL"
    )
    events: list[AlertEvent] = Field(min_length=1, max_length=3)


class AlertOut(BaseModel):
    id: uuid.UUID
    chatbot_id: uuid.UUID
    kind: str
    name: str
    target: str
    events: list[str]
    status: str
    paused_reason: str | None = None
    last_error: str | None = None
    last_success_at: Any = None
    created_at: Any


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class TestOut(BaseModel):
    delivery_id: int


async def add_alert_channel(
    conn,
    keyring: Keyring,
    tenant_id: uuid.UUID,
    chatbot_id: uuid.UUID,
    kind: str,
    name: str,
    email: str | None,
    slack_url: str | None,
    events: list[str],
) -> dict:
    """Create an alert channel (the API and the console): vet and seal a Slack URL, then the SQL rule.
    Call vet_alert_target first, outside the transaction (it resolves names)."""
    alert_id = uuid.uuid4()
    target = ("Slack incoming webhook …" + (slack_url or "")[-4:]) if kind == "slack" else (email or "").strip()
    row = await conn.fetchval(
        "SELECT parley.create_alert_channel($1, $2, $3, $4, $5, $6)",
        alert_id,
        chatbot_id,
        kind,
        name,
        target,
        list(events),
    )
    if kind == "slack":
        if not slack_url:  # vet_alert_target refuses this first; the seal must never hold nothing
            raise ApiError(422, "invalid_url", "Give the Slack incoming-webhook URL.")
        await store_secret(conn, keyring, tenant_id, alert_id, "token", slack_url, hint=slack_url[-4:])
    return row


async def vet_alert_target(kind: str, email: str | None, slack_url: str | None) -> None:
    if kind == "slack":
        if not slack_url:
            raise ApiError(422, "invalid_url", "Give the Slack incoming-webhook URL.")
        await vet(slack_url)
    elif kind == "email" and not email:
        raise ApiError(422, "invalid_email", "Give one e-mail address.")


ALERT_MISSING = "No such alert channel."


@api.route(
    "POST",
    "/api/chatbots/{chatbot_id}/alerts",
    body=AlertIn,
    response=AlertOut,
    status=201,
    min_role="admin",
    tags=TAGS,
)
async def create_alert(call: Call):
    """Alert someone by e-mail or Slack when this chatbot's visitors ask for a person, leave details or are unhappy."""
    b = call.body
    await vet_alert_target(b.kind, b.email, b.slack_webhook_url)
    async with call.tx() as conn:
        return await add_alert_channel(
            conn,
            Keyring.from_settings(call.settings.secret_key),
            call.member.tenant_id,
            call.uuid_param("chatbot_id"),
            b.kind,
            b.name,
            b.email,
            b.slack_webhook_url,
            list(b.events),
        )


@api.route("GET", "/api/chatbots/{chatbot_id}/alerts", response=AlertsOut, min_role="admin", tags=TAGS)
async def list_alerts(call: Call):
    """The chatbot's alert channels and their health."""
    async with call.tx() as conn:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM parley.chatbots c WHERE c.id = $1 AND c.deleted_at IS NULL)",
            call.uuid_param("chatbot_id"),
        ):
            raise ApiError(404, "not_found", "No such chatbot.")
        rows = await conn.fetch(
            "SELECT parley.alert_channel_json(d.id) AS a FROM parley.outbox_destinations d"
            " WHERE d.chatbot_id = $1 AND d.kind IN ('email', 'slack') ORDER BY d.created_at, d.id",
            call.uuid_param("chatbot_id"),
        )
    return {"alerts": [r["a"] for r in rows]}


@api.route("POST", "/api/alerts/{alert_id}/test", response=TestOut, status=202, min_role="admin", tags=TAGS)
async def test_alert(call: Call):
    """Send a test alert through the channel."""
    async with call.tx() as conn:
        return {"delivery_id": await conn.fetchval("SELECT parley.send_test_alert($1)", call.uuid_param("alert_id"))}


@api.route("DELETE", "/api/alerts/{alert_id}", status=204, min_role="admin", tags=TAGS)
async def delete_alert(call: Call):
    """Delete an alert channel."""
    async with call.tx() as conn:
        await destinations.delete(conn, "alert_channel_json", call.uuid_param("alert_id"), ALERT_MISSING)
