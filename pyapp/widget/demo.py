"""The demo tenant (`parley serve --demo`) and the `/demo` page that embeds its widget.

Seeding is idempotent and for local development only: it runs as the schema owner
connection (settings.admin_url) and creates "Demo Co", its owner demo@parley.local with a
fixed password, a chatbot allowing the local origins, and a little knowledge text when the
knowledge functions exist.
"""

from __future__ import annotations

import html
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from pyapp.context import SETTINGS
from pyapp.db import _init_connection
from pyapp.errors import ApiError

ROOT = Path(__file__).resolve().parents[2]
DEMO_HTML = ROOT / "widget" / "demo.html"
DEMO_EMAIL = "demo@parley.local"
DEMO_PASSWORD = "parley-demo-password"  # printed by `parley serve --demo`; local development only
DEMO_SLUG = "demo-co"
DEMO_TENANT = "Demo Co"
DEMO_BOT = "Demo Co assistant"
DEMO_SOURCE = "About Demo Co"
DEMO_KNOWLEDGE = """# About Demo Co

Demo Co sells handmade ceramic mugs, bowls and plates from its studio in Lisbon.

## Shipping
We ship worldwide. Orders leave the studio within 3 business days. Shipping inside the EU
takes 2 to 5 days and costs 6 EUR; it is free for orders over 60 EUR. Outside the EU shipping
takes 5 to 12 days and costs 15 EUR.

## Returns
You can return any unused item within 30 days for a full refund. Write to hello@demo.example
with your order number and we send a prepaid label.

## Care
All pieces are dishwasher and microwave safe. Hand-painted pieces last longer when washed by hand.

## Opening hours
Support answers Monday to Friday, 9:00 to 18:00 Lisbon time.
"""

_seeded: dict | None = None  # what seed_demo returned in this process, for /demo


async def _hash_password(settings, password: str) -> str:
    try:
        from pyapp.passwords import Passwords
    except ImportError:  # before the accounts module existed
        from argon2 import PasswordHasher

        return PasswordHasher().hash(password)
    return await Passwords(fast=bool(settings.extra.get("argon2_fast"))).hash(password)


async def _password_ok(settings, password_hash: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def local_origins(settings) -> list[str]:
    """The origins a browser uses for this server on this machine."""
    parts = urlsplit(settings.base_url)
    port = f":{parts.port}" if parts.port else ""
    origins = [f"{parts.scheme}://{parts.hostname}{port}"] if parts.hostname not in ("0.0.0.0", "::") else []
    for host in ("localhost", "127.0.0.1"):
        origin = f"http://{host}{port}"
        if origin not in origins:
            origins.append(origin)
    return origins


async def seed_demo(settings) -> dict:
    """Create (or find) the demo tenant; returns email, password, chatbot_key, tenant_id."""
    global _seeded
    conn = await asyncpg.connect(settings.admin_url)
    await _init_connection(conn)
    try:
        async with conn.transaction():
            user_id, password_hash = (
                await conn.fetchrow(
                    "SELECT id, password_hash FROM parley.users WHERE lower(email) = lower($1)", DEMO_EMAIL
                )
            ) or (None, None)
            if user_id is None:
                user_id = await conn.fetchval(
                    "INSERT INTO parley.users (email, name, password_hash, email_verified_at)"
                    " VALUES ($1, 'Demo Owner', $2, now()) RETURNING id",
                    DEMO_EMAIL,
                    await _hash_password(settings, DEMO_PASSWORD),
                )
            elif password_hash is None or not await _password_ok(settings, password_hash, DEMO_PASSWORD):
                await conn.execute(
                    "UPDATE parley.users SET password_hash = $2, failed_logins = 0, locked_until = NULL WHERE id = $1",
                    user_id,
                    await _hash_password(settings, DEMO_PASSWORD),
                )
            tenant_id = await conn.fetchval("SELECT id FROM parley.tenants WHERE slug = $1", DEMO_SLUG)
            if tenant_id is None:
                tenant_id = await conn.fetchval(
                    "INSERT INTO parley.tenants (slug, name) VALUES ($1, $2) RETURNING id", DEMO_SLUG, DEMO_TENANT
                )
            await conn.execute("UPDATE parley.tenants SET deleted_at = NULL WHERE id = $1", tenant_id)
            await conn.execute(
                "INSERT INTO parley.members (tenant_id, user_id, role) VALUES ($1, $2, 'owner')"
                " ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = 'owner'",
                tenant_id,
                user_id,
            )
            # The tenant's own functions read app.tenant_id; the owner connection bypasses RLS.
            await conn.execute(
                "SELECT set_config('app.tenant_id', $1, true), set_config('app.role', 'owner', true)", str(tenant_id)
            )
            bot = await conn.fetchrow(
                "SELECT id, public_key, allowed_origins FROM parley.chatbots"
                " WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL ORDER BY created_at LIMIT 1",
                tenant_id,
                DEMO_BOT,
            )
            origins = local_origins(settings)
            if bot is None:
                config = {
                    "greeting": "Hi! I'm the Demo Co assistant. Ask me about shipping, returns or our mugs.",
                    "starters": ["How much is shipping?", "Can I return a mug?", "Talk to a human"],
                    "lead_capture": {"mode": "before_handoff"},
                }
                bot = await conn.fetchrow(
                    "INSERT INTO parley.chatbots (tenant_id, name, allowed_origins, config) VALUES ($1, $2, $3, $4)"
                    " RETURNING id, public_key, allowed_origins",
                    tenant_id,
                    DEMO_BOT,
                    origins,
                    config,
                )
            elif not set(origins) <= set(bot["allowed_origins"]):
                merged = list(dict.fromkeys([*bot["allowed_origins"], *origins]))[:50]
                await conn.execute(
                    "UPDATE parley.chatbots SET allowed_origins = $3, updated_at = now()"
                    " WHERE tenant_id = $1 AND id = $2",
                    tenant_id,
                    bot["id"],
                    merged,
                )
            await _seed_knowledge(conn, bot["id"])
    finally:
        await conn.close()
    _seeded = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD, "chatbot_key": bot["public_key"], "tenant_id": tenant_id}
    return dict(_seeded)


async def _seed_knowledge(conn: asyncpg.Connection, chatbot_id: uuid.UUID) -> None:
    """A short text source, once, when the knowledge functions are installed."""
    present = await conn.fetchval(
        "SELECT to_regprocedure('parley.create_knowledge_source(uuid,text,text,text,text,jsonb)') IS NOT NULL"
        "   AND to_regprocedure('parley.ingest_document(uuid,text,text,text,jsonb)') IS NOT NULL"
    )
    if not present:
        return
    exists = await conn.fetchval(
        "SELECT 1 FROM parley.knowledge_sources WHERE tenant_id = parley.current_tenant_id()"
        " AND chatbot_id = $1 AND title = $2",
        chatbot_id,
        DEMO_SOURCE,
    )
    if exists:
        return
    from pyapp.knowledge.extract import extract_markdown
    from pyapp.knowledge.ingest import chunk_document

    doc = extract_markdown(DEMO_KNOWLEDGE)
    doc.title = DEMO_SOURCE
    chunks = chunk_document(doc)
    source_id = await conn.fetchval(
        "SELECT s.id FROM parley.create_knowledge_source($1, 'text', $2) s", chatbot_id, DEMO_SOURCE
    )
    await conn.fetchval("SELECT parley.ingest_document($1, 'text', NULL, $2, $3)", source_id, DEMO_SOURCE, chunks)
    await conn.execute(
        "SELECT parley.set_source_progress($1, 'ready', $2)", source_id, {"documents": 1, "chunks": len(chunks)}
    )


def _api_base(request: web.Request) -> str:
    public = request.app[SETTINGS].public_url
    if public:
        return public.rstrip("/")
    return f"{request.scheme}://{request.host}"


async def demo_page(request: web.Request) -> web.Response:
    if _seeded is None:
        raise ApiError(404, "demo_not_seeded", "No demo tenant in this process; run `parley serve --demo`.")
    try:
        template = DEMO_HTML.read_text()
    except OSError:
        raise ApiError(404, "widget_not_built", "widget/demo.html is missing.") from None
    page = template.replace("{{API_BASE}}", html.escape(_api_base(request), quote=True)).replace(
        "{{CHATBOT_KEY}}", html.escape(_seeded["chatbot_key"], quote=True)
    )
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_get("/demo", demo_page)
