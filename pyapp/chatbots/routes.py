"""Chatbots: create, read, update, delete, rotate the widget key (admins write, agents read).

The config is validated for the keys Parley knows (persona, greeting, branding, handoff,
lead capture, nudges, ...) and passed through untouched for any other key, so settings
written by a newer console or an integration survive a round trip. Rules (plan limits,
hiding branding) live in sql/40_chatbots.sql.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from pyapp import types
from pyapp.api import Call, api
from pyapp.conversations.routes import Strict
from pyapp.errors import not_found

TAGS = ("chatbots",)


class Open(BaseModel):
    """Known keys are checked; unknown keys are kept as they are."""

    model_config = ConfigDict(extra="allow")


class Branding(Open):
    primary_color: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] | None = None
    position: Literal["left", "right"] | None = None
    title: types.Text100 | None = None
    avatar_url: Annotated[str, Field(max_length=2048, pattern=r"^https://\S+$")] | None = None
    launcher_icon: types.Text32 | None = None
    hide_powered_by: bool | None = None


class Handoff(Open):
    miss_threshold: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="ungrounded bot answers in a row before a person is asked for (default 2, 0 = never)",
    )


class LeadCapture(Open):
    mode: Literal["after_messages", "before_handoff", "never"] | None = None
    after: int | None = Field(default=None, ge=0, le=100)


class Nudge(Open):
    after_seconds: int = Field(ge=0, le=3600)
    url_pattern: types.Text500 | None = None
    text: types.Text500


class IdleClose(Open):
    bot_minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 30)
    human_minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 30)


LanguageCode = Annotated[str, Field(max_length=16, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]


class LanguageTexts(Open):
    greeting: types.Text500 | None = None
    starters: list[types.Text200] | None = Field(default=None, max_length=10)


class ChatbotConfig(Open):
    persona: types.Text8000 | None = None
    greeting: types.Text500 | None = None
    # "auto" (or none): the visitor's browser language.
    language: Annotated[str, Field(max_length=16, pattern=r"^(auto|[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*)$")] | None = (
        None
    )
    starters: list[types.Text200] | None = Field(default=None, max_length=10)
    # The languages it speaks (the first is the default) and the greeting/starters in each; the
    # widget gets those of the visitor's language (sql/40_chatbots.sql: chatbot_language).
    languages: list[LanguageCode] | None = Field(default=None, max_length=10)
    texts: dict[LanguageCode, LanguageTexts] | None = None
    branding: Branding | None = None
    handoff: Handoff | None = None
    lead_capture: LeadCapture | None = None
    nudges: list[Nudge] | None = Field(default=None, max_length=10)
    max_nudges: int | None = Field(default=None, ge=0, le=10)
    idle_close: IdleClose | None = None
    # A visitor writing after a close continues the conversation within this many minutes (unless
    # rated), else starts a new one (sql/44_messages.sql: store_message).
    reopen_window_minutes: int | None = Field(default=None, ge=0, le=60 * 24 * 30)


Origin = Annotated[str, Field(max_length=300, pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")]


def _origins(values: list[str] | None) -> list[str] | None:
    return None if values is None else [v.rstrip("/").lower() for v in values]


TemplateKey = Annotated[str, Field(min_length=2, max_length=32, pattern=r"^[a-z][a-z_]+$")]


class ChatbotIn(Strict):
    name: types.Name100
    allowed_origins: list[Origin] = Field(
        default_factory=list,
        max_length=50,
        description="empty: any public site by its domain name may start the widget; local development pages (localhost, 127.0.0.1, ...) and bare IP addresses must be listed",
    )
    config: ChatbotConfig = Field(default_factory=ChatbotConfig)
    template: TemplateKey | None = Field(
        default=None, description="apply this template (GET /api/chatbot-templates) after creating"
    )


class ChatbotPatch(Strict):
    name: types.Name100 | None = None
    allowed_origins: list[Origin] | None = Field(default=None, max_length=50)
    config: ChatbotConfig | None = Field(
        default=None, description="merged at the top level; a null value removes a key"
    )


class ChatbotOut(BaseModel):
    id: UUID
    name: str
    public_key: str
    allowed_origins: list[str]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ChatbotsOut(BaseModel):
    chatbots: list[ChatbotOut]


_COLUMNS = "id, name, public_key, allowed_origins, config, created_at, updated_at"


def _config(config: ChatbotConfig | None, *, patch: bool) -> dict | None:
    if config is None:
        return None
    # exclude_unset keeps explicit nulls (PATCH: remove the key) and drops what was not sent.
    data = config.model_dump(mode="json", exclude_unset=True)
    return data if patch else {k: v for k, v in data.items() if v is not None}


@api.route("GET", "/api/chatbots", response=ChatbotsOut, tags=TAGS)
async def list_chatbots(call: Call):
    """The workspace's chatbots (deleted ones are left out)."""
    async with call.tx() as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM parley.chatbots WHERE deleted_at IS NULL ORDER BY created_at")
    return {"chatbots": [dict(r) for r in rows]}


@api.route("POST", "/api/chatbots", min_role="admin", body=ChatbotIn, response=ChatbotOut, status=201, tags=TAGS)
async def create_chatbot(call: Call):
    """Create a chatbot (402 plan_limit over the plan's max_chatbots), optionally from a template."""
    b = call.body
    async with call.tx() as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM parley.create_chatbot($1, $2, $3)",
            b.name.strip(),
            _origins(b.allowed_origins),
            _config(b.config, patch=False),
        )
        if b.template is not None:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM parley.apply_chatbot_template($1, $2)", row["id"], b.template
            )
    return dict(row)


@api.route("GET", "/api/chatbots/{chatbot_id}", response=ChatbotOut, tags=TAGS)
async def get_chatbot(call: Call):
    """One chatbot."""
    async with call.tx() as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM parley.chatbots WHERE id = $1 AND deleted_at IS NULL",
            call.uuid_param("chatbot_id"),
        )
    if row is None:
        raise not_found("chatbot")
    return dict(row)


@api.route("PATCH", "/api/chatbots/{chatbot_id}", min_role="admin", body=ChatbotPatch, response=ChatbotOut, tags=TAGS)
async def update_chatbot(call: Call):
    """Change name, allowed origins or config (config keys are merged; null removes one)."""
    b = call.body
    async with call.tx() as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM parley.update_chatbot($1, $2, $3, $4)",
            call.uuid_param("chatbot_id"),
            b.name.strip() if b.name else None,
            _origins(b.allowed_origins),
            _config(b.config, patch=True),
        )
    return dict(row)


@api.route("POST", "/api/chatbots/{chatbot_id}/rotate-key", min_role="admin", response=ChatbotOut, tags=TAGS)
async def rotate_key(call: Call):
    """Issue a new public widget key; the old embed code stops working."""
    async with call.tx() as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM parley.rotate_chatbot_key($1)", call.uuid_param("chatbot_id")
        )
    return dict(row)


@api.route("DELETE", "/api/chatbots/{chatbot_id}", min_role="admin", status=204, tags=TAGS)
async def delete_chatbot(call: Call):
    """Delete a chatbot (its conversations and leads are kept)."""
    async with call.tx() as conn:
        await conn.execute("SELECT parley.delete_chatbot($1)", call.uuid_param("chatbot_id"))


class TemplateOut(BaseModel):
    key: str
    title: str
    description: str
    config: dict[str, Any]


class TemplatesOut(BaseModel):
    templates: list[TemplateOut]


class TemplateIn(Strict):
    template: TemplateKey


@api.route("GET", "/api/chatbot-templates", response=TemplatesOut, tags=TAGS)
async def list_templates(call: Call):
    """The chatbot templates (personas with greeting, starters, handoff and lead settings)."""
    async with call.tx() as conn:
        rows = await conn.fetch("SELECT * FROM parley.list_chatbot_templates()")
    return {"templates": [dict(r) for r in rows]}


@api.route(
    "POST", "/api/chatbots/{chatbot_id}/template", min_role="admin", body=TemplateIn, response=ChatbotOut, tags=TAGS
)
async def apply_template(call: Call):
    """Apply a template: its persona, greeting, starters (per language), handoff and lead settings replace the chatbot's."""
    async with call.tx() as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM parley.apply_chatbot_template($1, $2)",
            call.uuid_param("chatbot_id"),
            call.body.template,
        )
    return dict(row)
