"""System message templates: what the assistant and the server say as "system" in a
conversation, per workspace and language (GET/PUT/DELETE /api/system-texts). The texts, their
defaults, placeholders, flags and rate limit are SQL's (sql/49_system_texts.sql).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pyapp.api import Call, api
from pyapp.types import SystemTextBody

TAGS = ("system texts",)
Locale = Literal["en", "es", "fr", "de", "tr"]


class LocaleQuery(BaseModel):
    locale: Locale = "en"


class SystemTextIn(BaseModel):
    body: SystemTextBody
    store: bool = True
    to_widget: bool = True
    to_channels: bool = False
    pin: bool = False


class SystemTextOut(BaseModel):
    kind: str
    locale: str
    body: str = Field(description="Placeholders {customer_name}, {agent_name}, {codename} are filled when sent.")
    custom: bool = Field(description="Changed by this workspace (else the shipped text).")
    store: bool = Field(description="Kept in the transcript (else shown once).")
    to_widget: bool = Field(description="Shown to the visitor (false: not said at all).")
    to_channels: bool = Field(description="Posted to the agents' channels (Telegram topics).")
    pin: bool = Field(description="Pinned in the channel's topic.")


class SystemTextsOut(BaseModel):
    locale: str
    texts: list[SystemTextOut]


@api.route("GET", "/api/system-texts", min_role="admin", query=LocaleQuery, response=SystemTextsOut, tags=TAGS)
async def list_system_texts(call: Call):
    """Every system text of the workspace in one language, each marked custom when changed."""
    async with call.tx() as conn:
        texts = await conn.fetchval("SELECT parley.list_system_texts($1)", call.query.locale)
    return SystemTextsOut(locale=call.query.locale, texts=texts)


def _kind_locale(call: Call) -> tuple[str, str]:
    return call.param("kind")[:40], call.param("locale")[:8]


@api.route(
    "PUT",
    "/api/system-texts/{kind}/{locale}",
    min_role="admin",
    body=SystemTextIn,
    response=SystemTextOut,
    tags=TAGS,
)
async def put_system_text(call: Call):
    """Word one system text of one language your way, and choose where it goes (audited)."""
    kind, locale = _kind_locale(call)
    b: SystemTextIn = call.body
    async with call.tx() as conn:
        out = await conn.fetchval(
            "SELECT parley.put_system_text($1, $2, $3, $4, $5, $6, $7)",
            kind,
            locale,
            b.body,
            b.store,
            b.to_widget,
            b.to_channels,
            b.pin,
        )
    return SystemTextOut.model_validate(out)


@api.route("DELETE", "/api/system-texts/{kind}/{locale}", min_role="admin", response=SystemTextOut, tags=TAGS)
async def reset_system_text(call: Call):
    """Go back to the shipped text of one kind and language; returns it."""
    kind, locale = _kind_locale(call)
    async with call.tx() as conn:
        out = await conn.fetchval("SELECT parley.reset_system_text($1, $2)", kind, locale)
    return SystemTextOut.model_validate(out)
