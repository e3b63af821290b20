"""Webhook endpoints API: create (SSRF-vetted URL, a whsec_ secret shown once), list, change,
delete, rotate the secret with an overlap, send a test event, read the delivery log.

Rules live in sql/82_webhooks.sql (fields, limits, roles) and sql/81_channels.sql (secrets);
this module vets the address (pyapp/net) and seals secrets (pyapp/channels/envelope).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.channels.envelope import Keyring, store_secret
from pyapp.conversations.routes import Strict
from pyapp.errors import ApiError
from pyapp.net import FetchError, FetchRefused, vet_url
from pyapp.net.safe_fetch import allow_hosts_from_env
from pyapp.outbox import destinations
from pyapp.outbox.routes import DeliveriesOut
from pyapp.webhooks.signing import new_secret

TAGS = ("webhooks",)
route = api.group(min_role="admin", tags=TAGS)


class EndpointIn(Strict):
    name: str = Field("Webhook", max_length=100)
    url: str = Field(max_length=2048, description="http(s) URL; internal addresses are refused")
    event_kinds: list[str] = Field(min_length=1, max_length=50, description="e.g. message_added, human_requested")
    chatbot_id: uuid.UUID | None = Field(default=None, description="only this chatbot's conversations")


class EndpointPatch(Strict):
    name: str | None = Field(default=None, max_length=100)
    url: str | None = Field(default=None, max_length=2048)
    event_kinds: list[str] | None = Field(default=None, min_length=1, max_length=50)
    enabled: bool | None = None


class SecretInfo(BaseModel):
    id: uuid.UUID
    hint: str | None = None
    created_at: Any
    expires_at: Any = None


class EndpointOut(BaseModel):
    id: uuid.UUID
    name: str
    url: str
    event_kinds: list[str]
    chatbot_id: uuid.UUID | None = None
    status: str
    paused_reason: str | None = None
    paused_at: Any = None
    failing_since: Any = None
    last_success_at: Any = None
    last_error: str | None = None
    created_at: Any
    updated_at: Any
    secrets: list[SecretInfo] = []
    secret: str | None = Field(default=None, description="the new whsec_ secret: shown once, on creation and rotation")


class EndpointsOut(BaseModel):
    endpoints: list[EndpointOut]


class RotateIn(Strict):
    overlap_hours: int = Field(24, ge=0, le=168, description="how long the old secret stays valid as well")


class TestOut(BaseModel):
    delivery_id: int


def keyring(call: Call) -> Keyring:
    return Keyring.from_settings(call.settings.secret_key)


async def vet(url: str) -> None:
    """The SSRF guard at creation: the URL's form and every address its name resolves to."""
    try:
        await vet_url(url, allow_hosts=allow_hosts_from_env())
    except FetchRefused as exc:
        raise ApiError(422, "url_not_allowed", exc.message) from None
    except FetchError as exc:
        raise ApiError(422, "url_unreachable", exc.message) from None


async def new_signing_secret(
    conn, ring: Keyring, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, overlap: timedelta | None
) -> str:
    """A fresh whsec_ secret for the endpoint, sealed and stored; the old ones stay valid for overlap."""
    secret = new_secret()
    await store_secret(conn, ring, tenant_id, endpoint_id, "signing", secret, hint=secret[-4:], overlap=overlap)
    return secret


async def _new_secret(conn, call: Call, endpoint_id: uuid.UUID, overlap: timedelta | None) -> str:
    return await new_signing_secret(conn, keyring(call), call.member.tenant_id, endpoint_id, overlap)


ENDPOINT_MISSING = "No such webhook endpoint."


async def _endpoint(conn, endpoint_id) -> dict:
    return await destinations.shown(conn, "webhook_endpoint_json", endpoint_id, ENDPOINT_MISSING)


@route("POST", "/api/webhooks", body=EndpointIn, response=EndpointOut, status=201)
async def create_endpoint(call: Call):
    """Add an endpoint; the response carries its whsec_ signing secret, shown this once."""
    b = call.body
    await vet(b.url)
    endpoint_id = uuid.uuid4()
    async with call.tx() as conn:
        await conn.fetchval(
            "SELECT parley.create_webhook_endpoint($1, $2, $3, $4, $5)",
            endpoint_id,
            b.name,
            b.url,
            b.event_kinds,
            b.chatbot_id,
        )
        secret = await _new_secret(conn, call, endpoint_id, None)
        return {**await _endpoint(conn, endpoint_id), "secret": secret}


@route("GET", "/api/webhooks", response=EndpointsOut)
async def list_endpoints(call: Call):
    """Every endpoint with its health (paused ones say why)."""
    async with call.tx() as conn:
        return {"endpoints": await destinations.listed(conn, "webhook_endpoint_json", "webhook")}


@route("GET", "/api/webhooks/{endpoint_id}", response=EndpointOut)
async def get_endpoint(call: Call):
    """One endpoint."""
    async with call.tx() as conn:
        return await _endpoint(conn, call.uuid_param("endpoint_id"))


@route("PATCH", "/api/webhooks/{endpoint_id}", body=EndpointPatch, response=EndpointOut)
async def update_endpoint(call: Call):
    """Change the name, URL (vetted again), event kinds, or disable/enable it."""
    b = call.body
    if b.url is not None:
        await vet(b.url)
    async with call.tx() as conn:
        return await conn.fetchval(
            "SELECT parley.update_webhook_endpoint($1, $2, $3, $4, $5)",
            call.uuid_param("endpoint_id"),
            b.name,
            b.url,
            b.event_kinds,
            b.enabled,
        )


@route("DELETE", "/api/webhooks/{endpoint_id}", status=204)
async def delete_endpoint(call: Call):
    """Delete an endpoint with its deliveries and secrets."""
    async with call.tx() as conn:
        await destinations.delete(conn, "webhook_endpoint_json", call.uuid_param("endpoint_id"), ENDPOINT_MISSING)


@route("POST", "/api/webhooks/{endpoint_id}/rotate-secret", body=RotateIn, response=EndpointOut)
async def rotate_secret(call: Call):
    """A new signing secret (shown once); the old one keeps signing too for overlap_hours."""
    endpoint_id = call.uuid_param("endpoint_id")
    async with call.tx() as conn:
        await _endpoint(conn, endpoint_id)
        secret = await _new_secret(conn, call, endpoint_id, timedelta(hours=call.body.overlap_hours))
        return {**await _endpoint(conn, endpoint_id), "secret": secret}


@route("POST", "/api/webhooks/{endpoint_id}/test", response=TestOut, status=202)
async def send_test(call: Call):
    """Queue a signed webhook.test event to the endpoint."""
    async with call.tx() as conn:
        return {
            "delivery_id": await conn.fetchval("SELECT parley.send_test_webhook($1)", call.uuid_param("endpoint_id"))
        }


@route("GET", "/api/webhooks/{endpoint_id}/deliveries", response=DeliveriesOut)
async def endpoint_deliveries(call: Call):
    """The endpoint's delivery log, newest first (replay: POST /api/outbox/deliveries/{id}/replay)."""
    endpoint_id = call.uuid_param("endpoint_id")
    async with call.tx() as conn:
        await _endpoint(conn, endpoint_id)
        rows = [
            dict(r) for r in await conn.fetch("SELECT * FROM parley.list_deliveries($1, NULL, NULL, 100)", endpoint_id)
        ]
    return {"deliveries": rows, "next_before_id": rows[-1]["id"] if len(rows) == 100 else None}
