"""The outbox API: destinations' health, the delivery log, replay of one delivery or a dead-letter queue.

Every rule (who may, what can be replayed, what resuming does) is in sql/84_outbox_operators.sql.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.conversations.routes import Strict
from pyapp.errors import ApiError

TAGS = ("outbox",)
route = api.group(min_role="admin", tags=TAGS)
DeliveryStatus = Literal["pending", "delivered", "failed", "dead", "replayed"]


class DestinationOut(BaseModel):
    id: UUID
    kind: str
    name: str
    target: str
    event_kinds: list[str]
    chatbot_id: UUID | None = None
    ordered: bool
    status: Literal["active", "paused", "disabled"]
    paused_reason: str | None = None
    paused_at: datetime | None = None
    failing_since: datetime | None = None
    consecutive_failures: int
    last_success_at: datetime | None = None
    last_error: str | None = None
    next_send_at: datetime | None = Field(default=None, description="held until (retry_after, backoff, rate limit)")
    pending: int
    dead: int
    failed: int
    created_at: datetime


class DestinationsOut(BaseModel):
    destinations: list[DestinationOut]


class DeliveryQuery(Strict):
    destination: UUID | None = None
    status: DeliveryStatus | None = Field(default=None, description="dead = the dead-letter queue")
    before_id: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="keyset: id of the last row of the previous page"
    )
    limit: int = Field(50, ge=1, le=500)


class DeliveryOut(BaseModel):
    id: int
    created_at: datetime
    destination_id: UUID
    destination_name: str
    kind: str
    delivery_key: UUID
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    deadline: datetime
    last_status_code: int | None = None
    last_error: str | None = None
    finished_at: datetime | None = None
    replay_of: int | None = None
    event_id: int | None = None
    conversation_id: UUID | None = None


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]
    next_before_id: int | None = None


class ReplayOut(BaseModel):
    id: int = Field(description="the new pending delivery (same delivery_key)")


class ReplayAllIn(Strict):
    include_failed: bool = Field(False, description="also the deliveries stopped by a 4xx answer")


class ReplayedOut(BaseModel):
    replayed: int


def delivery_id(call: Call) -> int:
    raw = call.param("delivery_id")
    if not raw.isdigit() or int(raw) >= 2**63:
        raise ApiError(404, "not_found", "No such delivery.")
    return int(raw)


@route("GET", "/api/outbox/destinations", response=DestinationsOut)
async def list_destinations(call: Call):
    """Every destination (webhook endpoints, alert targets, channels) with its health."""
    async with call.tx() as conn:
        return {"destinations": [dict(r) for r in await conn.fetch("SELECT * FROM parley.list_destinations()")]}


@route("POST", "/api/outbox/destinations/{destination_id}/resume", status=204)
async def resume_destination(call: Call):
    """Resume a paused destination: its waiting deliveries go out."""
    async with call.tx() as conn:
        await conn.execute("SELECT parley.resume_destination($1)", call.uuid_param("destination_id"))


@route("POST", "/api/outbox/destinations/{destination_id}/replay", body=ReplayAllIn, response=ReplayedOut)
async def replay_dead_letters(call: Call):
    """Replay the destination's whole dead-letter queue, in order, each with its original id."""
    async with call.tx() as conn:
        n = await conn.fetchval(
            "SELECT parley.replay_dead_letters($1, $2)", call.uuid_param("destination_id"), call.body.include_failed
        )
    return {"replayed": n}


@route("GET", "/api/outbox/deliveries", query=DeliveryQuery, response=DeliveriesOut)
async def list_deliveries(call: Call):
    """The delivery log, newest first; status=dead lists the dead-letter queue."""
    q = call.query
    async with call.tx() as conn:
        rows = [
            dict(r)
            for r in await conn.fetch(
                "SELECT * FROM parley.list_deliveries($1, $2, $3, $4)", q.destination, q.status, q.before_id, q.limit
            )
        ]
    return {"deliveries": rows, "next_before_id": rows[-1]["id"] if len(rows) == q.limit else None}


@route("GET", "/api/outbox/deliveries/{delivery_id}", response=dict[str, Any])
async def get_delivery(call: Call):
    """One delivery: payload, status and every attempt (status code, latency, error, truncated response)."""
    async with call.tx() as conn:
        return await conn.fetchval("SELECT parley.get_delivery($1)", delivery_id(call))


@route("POST", "/api/outbox/deliveries/{delivery_id}/replay", response=ReplayOut, status=202)
async def replay_delivery(call: Call):
    """Send a finished delivery again (same webhook-id, fresh retry window)."""
    async with call.tx() as conn:
        return {"id": await conn.fetchval("SELECT parley.replay_delivery($1)", delivery_id(call))}
