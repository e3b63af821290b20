"""Onboarding wizard for a new workspace: create a chatbot → add knowledge → copy the embed
snippet → install check.

The install check fetches the customer's page with the SSRF-guarded fetcher (pyapp.net)
and looks for a widget <script> carrying this chatbot's public key; it also says whether the
page's origin is allowed to start the widget.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from pydantic import ValidationError

from pyapp.console import bridge, queries
from pyapp.console.web import FIRST_VIEW, Ctx, Shown, form_errors, form_page, form_refused, page, redirect
from pyapp.domains.host import embed_base
from pyapp.errors import ApiError
from pyapp.widget.assets import snippet

STEPS = (
    ("chatbot", "Create a chatbot"),
    ("knowledge", "Add knowledge"),
    ("embed", "Copy the embed code"),
    ("install", "Check the installation"),
)
INSTALL_MAX_BYTES = 2 * 1024 * 1024


async def _chatbot(ctx: Ctx):
    raw = ctx.request.query.get("chatbot") or ctx.form.get("chatbot")
    if raw:
        try:
            bot = await queries.fetchrow(ctx.conn, "chatbot", uuid.UUID(str(raw)))
        except ValueError:
            bot = None
        if bot is not None:
            return bot
    bots = await queries.fetch(ctx.conn, "chatbots")
    return bots[0] if bots else None


async def render_step(ctx: Ctx, step: str, shown: Shown = FIRST_VIEW, *, check: dict | None = None):
    bot = await _chatbot(ctx)
    if bot is None:
        step = "chatbot"
    sources = await queries.fetch(ctx.conn, "knowledge_sources", bot["id"], None) if bot else []
    done = {
        "chatbot": bot is not None,
        "knowledge": bool(sources),
        "embed": False,
        "install": bool(check and check.get("ok")),
    }
    data = {"step": step, "steps": STEPS, "bot": bot, "sources": sources, "done": done, "check": check}
    data["snippet"] = snippet(await embed_base(ctx.conn, ctx.request), bot["public_key"]) if bot else ""
    data["templates"] = await queries.fetch(ctx.conn, "chatbot_templates") if step == "chatbot" else []
    return form_page(ctx, "onboarding.html", shown, {}, **data)


@page("GET", "/console/onboarding", min_role="admin")
async def onboarding(ctx: Ctx):
    step = ctx.request.query.get("step", "")
    if step not in dict(STEPS):
        bot = await _chatbot(ctx)
        step = "knowledge" if bot else "chatbot"
    return await render_step(ctx, step)


@page("POST", "/console/onboarding/knowledge", min_role="admin")
async def add_knowledge(ctx: Ctx):
    """Step 2: pasted text (imported at once) or a page/site address (imported in the background)."""
    from pyapp.knowledge import routes

    bot = await _chatbot(ctx)
    if bot is None:
        return redirect("/console/onboarding?step=chatbot")
    ctx.request.match_info["chatbot_id"] = str(bot["id"])
    values = {k: str(ctx.form.get(k, "")) for k in ("text", "url")}
    text, url = values["text"].strip(), values["url"].strip()
    if not text and not url:
        errors = {"text": "Paste some text, or give the address of a page below.", "url": " "}
        return await render_step(ctx, "knowledge", Shown(422, errors, values))
    try:
        if text:
            body = routes.SourceIn.model_validate({"kind": "text", "title": "About us", "text": text})
        else:
            body = routes.SourceIn.model_validate(
                {"kind": "crawl" if ctx.form.get("whole_site") else "url", "url": url, "max_pages": 50}
            )
        await bridge.call(ctx, routes.create_source, body=body, min_role="admin")
    except ValidationError as exc:
        return await render_step(ctx, "knowledge", Shown(422, form_errors(exc), values))
    except ApiError as exc:
        return await render_step(ctx, "knowledge", form_refused(exc, "text" if text else "url", values))
    return redirect(f"/console/onboarding?chatbot={bot['id']}&step=embed")


def find_widget(html: str, public_key: str) -> dict:
    """Where the page loads a Parley widget script, and with which key."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    keys = []
    for node in tree.css("script[data-chatbot]"):
        src = node.attributes.get("src") or ""
        key = (node.attributes.get("data-chatbot") or "").strip()
        if "widget" in src.rsplit("/", 1)[-1]:
            keys.append(key)
    return {"found": public_key in keys, "other_keys": [k for k in keys if k != public_key]}


@page("POST", "/console/onboarding/install-check", min_role="admin")
async def install_check(ctx: Ctx):
    """Step 4: fetch the customer's page (SSRF-guarded) and look for the snippet with this key."""
    from pyapp.net import FetchError, SafeFetcher

    bot = await _chatbot(ctx)
    if bot is None:
        return redirect("/console/onboarding?step=chatbot")
    url = str(ctx.form.get("url", "")).strip()[:2048]
    values = {"url": url}
    if not url.lower().startswith(("http://", "https://")):
        errors = {"url": "Enter the full address of a page of your site (https://…)."}
        return await render_step(ctx, "install", Shown(422, errors, values))
    try:
        result = await SafeFetcher(max_bytes=INSTALL_MAX_BYTES, timeout=15).fetch(
            url, allowed_types=("text/html", "application/xhtml+xml")
        )
    except FetchError as exc:
        errors = {"url": f"We could not read that page: {exc.message} ({exc.code})."}
        return await render_step(ctx, "install", Shown(422, errors, values))
    found = find_widget(result.text(), bot["public_key"])
    parts = urlsplit(result.url)
    allowed = list(bot["allowed_origins"] or [])
    # The widget's own rule (parley.origin_allowed), so the check says what the widget will do.
    origin, origin_allowed = await ctx.conn.fetchrow(
        "SELECT coalesce(parley.normalize_origin($1), $1), parley.origin_allowed($2::text[], $1)",
        f"{parts.scheme}://{parts.netloc}",
        allowed,
    )
    check = {
        "ok": found["found"],
        "url": result.url,
        "other_keys": found["other_keys"],
        "origin": origin,
        "origin_allowed": origin_allowed,
        "allowed": allowed,
    }
    return await render_step(ctx, "install", Shown(values=values), check=check)
