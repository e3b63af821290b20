"""Chatbot settings & branding (admins): persona, greeting, starter chips, proactive nudges, language,
colours, position, allowed origins, handoff and lead capture, idle close; embed snippet, key
rotation, deletion; and a live widget preview.

Saving goes through the chatbots surface's handlers (pyapp.chatbots), whose pydantic models
validate the config; their errors are mapped back to the form fields.

The preview is an iframe of a console page that embeds the real /widget.js, pointed (via
`data-api`) at a sandbox under /console/preview/<signed draft>/ that answers the widget's
session and socket with the draft's public config and a canned bot line. The draft is signed
with the server secret and expires, so nothing is stored and no conversation is created.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from pyapp.console import bridge, queries
from pyapp.console.web import Ctx, Shown, json_ok, page, redirect, secure_headers
from pyapp.context import POOL, SETTINGS, json_dumps
from pyapp.domains.host import embed_base
from pyapp.errors import ApiError
from pyapp.inputs import parse_json
from pyapp.security import sign, verify
from pyapp.widget.assets import base_url, snippet, widget_script_url

NUDGE_ROWS = 3
# The widget's own catalogs; a chatbot may list other codes too (their texts are edited alike).
WIDGET_LANGUAGES = (("en", "English"), ("es", "Español"), ("fr", "Français"), ("de", "Deutsch"), ("tr", "Türkçe"))
PREVIEW_TTL = 3600
PREVIEW_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
    "object-src 'none'"
)


def _models():
    from pyapp.chatbots import routes as chatbots

    return chatbots


# ------------------------------------------------------------------------ form <-> config


def form_values(bot) -> dict:
    """The settings form's values from a stored chatbot."""
    cfg = bot["config"] or {}
    b = cfg.get("branding") or {}
    h = cfg.get("handoff") or {}
    lc = cfg.get("lead_capture") or {}
    idle = cfg.get("idle_close") or {}
    values = {
        "name": bot["name"],
        "allowed_origins": "\n".join(bot["allowed_origins"] or []),
        "persona": cfg.get("persona") or "",
        "greeting": cfg.get("greeting") or "",
        "language": cfg.get("language") or "",
        "starters": "\n".join(cfg.get("starters") or []),
        "primary_color": b.get("primary_color") or "#4f46e5",
        "position": b.get("position") or "right",
        "title": b.get("title") or "",
        "avatar_url": b.get("avatar_url") or "",
        "launcher_icon": b.get("launcher_icon") or "",
        "hide_powered_by": bool(b.get("hide_powered_by")),
        "miss_threshold": "" if h.get("miss_threshold") is None else h.get("miss_threshold"),
        "lead_mode": lc.get("mode") or "never",
        "lead_after": "" if lc.get("after") is None else lc.get("after"),
        "max_nudges": "" if cfg.get("max_nudges") is None else cfg.get("max_nudges"),
        "idle_bot_minutes": idle.get("bot_minutes") or "",
        "idle_human_minutes": idle.get("human_minutes") or "",
    }
    values["languages"] = ", ".join(cfg.get("languages") or [])
    texts = cfg.get("texts") or {}
    for code in text_codes(cfg.get("languages"), texts):
        t = texts.get(code) or {}
        values[f"text_{code}_greeting"] = t.get("greeting") or ""
        values[f"text_{code}_starters"] = "\n".join(t.get("starters") or [])
    for i, n in enumerate((cfg.get("nudges") or [])[:NUDGE_ROWS]):
        values[f"nudge_{i}_after_seconds"] = n.get("after_seconds", "")
        values[f"nudge_{i}_url_pattern"] = n.get("url_pattern") or ""
        values[f"nudge_{i}_text"] = n.get("text") or ""
    return values


def text_codes(languages, texts) -> list[str]:
    """The languages whose greeting and starters the form shows: the widget's five, then any other listed."""
    codes = [code for code, _ in WIDGET_LANGUAGES]
    for code in [*(languages or []), *(texts or {})]:
        if code not in codes:
            codes.append(code)
    return codes


def _codes(raw: str) -> list[str]:
    return [c.strip() for c in str(raw or "").replace(";", ",").replace(" ", ",").split(",") if c.strip()]


def _lines(raw: str) -> list[str]:
    return [line.strip() for line in str(raw or "").replace("\r", "").split("\n") if line.strip()]


def _num(raw, field: str, errors: dict):
    raw = str(raw if raw is not None else "").strip()
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        errors[field] = "A whole number."
        return None


def patch_from_form(form: dict) -> tuple[dict, dict, dict]:
    """(values echoed back, PATCH body for pyapp.chatbots, errors found before the model)."""
    errors: dict = {}
    get = lambda k: str(form.get(k, "") or "")  # noqa: E731
    # The form echoed back to the template: text fields, and the checkbox as a bool.
    values: dict[str, Any] = {
        k: get(k)
        for k in (
            "name",
            "allowed_origins",
            "persona",
            "greeting",
            "language",
            "starters",
            "primary_color",
            "position",
            "title",
            "avatar_url",
            "launcher_icon",
            "miss_threshold",
            "lead_mode",
            "lead_after",
            "max_nudges",
            "idle_bot_minutes",
            "idle_human_minutes",
        )
    }
    values["hide_powered_by"] = get("hide_powered_by") in ("1", "on", "true")
    values["languages"] = get("languages")
    languages = _codes(values["languages"])
    posted = [k[5:].rsplit("_", 1)[0] for k in form if k.startswith("text_") and k.count("_") >= 2]
    texts = {}
    for code in text_codes(languages, dict.fromkeys(posted)):
        greeting, starters = get(f"text_{code}_greeting"), get(f"text_{code}_starters")
        values[f"text_{code}_greeting"], values[f"text_{code}_starters"] = greeting, starters
        entry = {k: v for k, v in (("greeting", greeting.strip() or None), ("starters", _lines(starters) or None)) if v}
        if entry:
            texts[code] = entry
    branding = {
        k: v
        for k, v in (
            ("primary_color", values["primary_color"].strip() or None),
            ("position", values["position"] or None),
            ("title", values["title"].strip() or None),
            ("avatar_url", values["avatar_url"].strip() or None),
            ("launcher_icon", values["launcher_icon"].strip() or None),
        )
        if v is not None
    }
    if values["hide_powered_by"]:
        branding["hide_powered_by"] = True
    nudges = []
    for i in range(NUDGE_ROWS):
        for part in ("after_seconds", "url_pattern", "text"):
            values[f"nudge_{i}_{part}"] = get(f"nudge_{i}_{part}")
        text = values[f"nudge_{i}_text"].strip()
        after = _num(values[f"nudge_{i}_after_seconds"], f"nudge_{i}_after_seconds", errors)
        if text or after is not None or values[f"nudge_{i}_url_pattern"].strip():
            if not text:
                errors[f"nudge_{i}_text"] = "Write the message to show."
            nudges.append(
                {
                    "after_seconds": after if after is not None else 0,
                    "text": text,
                    **(
                        {"url_pattern": values[f"nudge_{i}_url_pattern"].strip()}
                        if values[f"nudge_{i}_url_pattern"].strip()
                        else {}
                    ),
                }
            )
    miss = _num(values["miss_threshold"], "miss_threshold", errors)
    lead_after = _num(values["lead_after"], "lead_after", errors)
    max_nudges = _num(values["max_nudges"], "max_nudges", errors)
    idle_bot = _num(values["idle_bot_minutes"], "idle_bot_minutes", errors)
    idle_human = _num(values["idle_human_minutes"], "idle_human_minutes", errors)
    config = {
        "persona": values["persona"].strip() or None,
        "greeting": values["greeting"].strip() or None,
        "language": values["language"].strip() or None,
        "starters": _lines(values["starters"]) or None,
        "languages": languages or None,
        "texts": texts or None,
        "branding": branding or None,
        "handoff": {"miss_threshold": miss} if miss is not None else None,
        "lead_capture": {
            "mode": values["lead_mode"] or "never",
            **({"after": lead_after} if lead_after is not None else {}),
        },
        "nudges": nudges or None,
        "max_nudges": max_nudges,
        "idle_close": {k: v for k, v in (("bot_minutes", idle_bot), ("human_minutes", idle_human)) if v is not None}
        or None,
    }
    body = {"name": values["name"].strip(), "allowed_origins": _lines(values["allowed_origins"]), "config": config}
    return values, body, errors


FIELD_OF = {
    ("config", "branding"): None,
    ("config", "handoff", "miss_threshold"): "miss_threshold",
    ("config", "lead_capture", "mode"): "lead_mode",
    ("config", "lead_capture", "after"): "lead_after",
    ("config", "idle_close", "bot_minutes"): "idle_bot_minutes",
    ("config", "idle_close", "human_minutes"): "idle_human_minutes",
}


def model_errors(exc: ValidationError) -> dict:
    """Map ChatbotPatch errors (nested locations) to the form's field names."""
    out: dict = {}
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if loc[:1] == ("allowed_origins",):
            field, msg = "allowed_origins", "One origin per line, like https://www.example.com (no path)."
        elif loc[:2] == ("config", "nudges") and len(loc) >= 4:
            field = f"nudge_{loc[2]}_{loc[3]}"
        elif loc[:2] == ("config", "branding") and len(loc) >= 3:
            field = loc[2]
            if field == "primary_color":
                msg = "A colour like #4f46e5."
            elif field == "avatar_url":
                msg = "An https:// address of an image."
        elif mapped := FIELD_OF.get(loc):
            field = mapped
        elif loc[:2] == ("config", "starters"):
            field = "starters"
        elif loc[:2] == ("config", "languages"):
            field, msg = "languages", "Language codes separated by commas, like en, de, pt-BR."
        elif loc[:2] == ("config", "texts") and len(loc) >= 4:
            field = f"text_{loc[2]}_{loc[3]}"
        elif len(loc) >= 2 and loc[0] == "config":
            field = loc[1]
            if field == "language":
                msg = "A language code like en, pt-BR or de."
        else:
            field = loc[0] if loc else "__all__"
        out.setdefault(field, msg)
    return out


# ------------------------------------------------------------------------------------ pages


@page("GET", "/console/chatbots", min_role="admin")
async def chatbots(ctx: Ctx):
    bots = await queries.fetch(ctx.conn, "chatbots")
    return ctx.render(
        "chatbots.html",
        bots=bots,
        values={},
        errors={},
        flash={"deleted": "Chatbot deleted."}.get(ctx.request.query.get("done", "")),
    )


@page("POST", "/console/chatbots", min_role="admin")
async def create(ctx: Ctx):
    """Create with a name; the settings page comes next."""
    models = _models()
    name = str(ctx.form.get("name", "")).strip()
    template = str(ctx.form.get("template", "") or "").strip() or None
    next_page = "onboarding" if ctx.form.get("from") == "onboarding" else "settings"
    try:
        body = models.ChatbotIn.model_validate({"name": name, "template": template})
        bot = await bridge.call(ctx, models.create_chatbot, body=body, min_role="admin")
    except (ValidationError, ApiError) as exc:
        if isinstance(exc, ApiError) and (exc.status >= 500 or exc.status in (401, 403)):
            raise
        message = "Name the chatbot (1-100 characters)." if isinstance(exc, ValidationError) else exc.message
        if next_page == "onboarding":
            from pyapp.console.onboarding import render_step

            shown = Shown(422, {"name": message}, {"name": name, "template": template or ""})
            return await render_step(ctx, "chatbot", shown)
        bots = await queries.fetch(ctx.conn, "chatbots")
        return ctx.render("chatbots.html", status=422, bots=bots, values={"name": name}, errors={"name": message})
    if next_page == "onboarding":
        return redirect(f"/console/onboarding?chatbot={bot['id']}&step=knowledge")
    return redirect(f"/console/chatbots/{bot['id']}?done=created")


async def _settings_page(ctx: Ctx, bot, *, values=None, errors=None, status=200, flash=None):
    preview = preview_url(ctx.request, bot["id"], bot["name"], bot["config"] or {}, bot["public_key"])
    # offered only where SQL (check_chatbot_fields) would accept it
    can_hide = bool(
        await ctx.conn.fetchval("SELECT allow_hide_branding FROM parley.effective_limits(parley.current_tenant_id())")
    )
    return ctx.render(
        "chatbot.html",
        status=status,
        bot=bot,
        can_hide_branding=can_hide,
        values=values or form_values(bot),
        errors=errors or {},
        nudge_rows=range(NUDGE_ROWS),
        text_codes=text_codes(
            _codes(values["languages"]) if values else (bot["config"] or {}).get("languages"),
            (bot["config"] or {}).get("texts"),
        ),
        language_names=dict(WIDGET_LANGUAGES),
        snippet=snippet(await embed_base(ctx.conn, ctx.request), bot["public_key"]),
        preview=preview,
        template_options=[("", "Choose…")]
        + [(t["key"], t["title"]) for t in await queries.fetch(ctx.conn, "chatbot_templates")],
        flash=flash
        or {
            "created": "Chatbot created: set it up below.",
            "saved": "Saved.",
            "rotated": "New key issued: update the embed code on your site.",
            "template": "Template applied: persona, greeting, starters, handoff and lead settings replaced.",
        }.get(ctx.request.query.get("done", "")),
    )


async def _bot(ctx: Ctx):
    bot = await queries.fetchrow(ctx.conn, "chatbot", ctx.uuid("chatbot_id"))
    if bot is None:
        raise ApiError(404, "not_found", "No such chatbot.")
    return bot


@page("GET", "/console/chatbots/{chatbot_id}", min_role="admin")
async def settings(ctx: Ctx):
    return await _settings_page(ctx, await _bot(ctx))


@page("POST", "/console/chatbots/{chatbot_id}", min_role="admin")
async def save(ctx: Ctx):
    models = _models()
    bot = await _bot(ctx)
    values, body, errors = patch_from_form(ctx.form)
    patch = None
    try:
        patch = models.ChatbotPatch.model_validate(body)
    except ValidationError as exc:
        errors = {**model_errors(exc), **errors}
    if not body["name"]:
        errors["name"] = "Name the chatbot (1-100 characters)."
    if errors:
        return await _settings_page(ctx, bot, values=values, errors=errors, status=422)
    try:
        await bridge.call(ctx, models.update_chatbot, body=patch, min_role="admin")
    except ApiError as exc:
        if exc.status >= 500 or exc.status in (401, 403, 404):
            raise
        field = {"invalid_origin": "allowed_origins", "plan_limit": "hide_powered_by"}.get(exc.code, "__all__")
        return await _settings_page(ctx, bot, values=values, errors={field: exc.message}, status=exc.status)
    return redirect(f"/console/chatbots/{bot['id']}?done=saved")


@page("POST", "/console/chatbots/{chatbot_id}/rotate-key", min_role="admin")
async def rotate(ctx: Ctx):
    await _bot(ctx)
    await bridge.call(ctx, _models().rotate_key, min_role="admin")
    return redirect(f"/console/chatbots/{ctx.uuid('chatbot_id')}?done=rotated")


@page("POST", "/console/chatbots/{chatbot_id}/template", min_role="admin")
async def apply_template(ctx: Ctx):
    """Apply a template through the API's handler (sql/48_chatbot_templates.sql holds the templates)."""
    models = _models()
    bot = await _bot(ctx)
    try:
        body = models.TemplateIn.model_validate({"template": str(ctx.form.get("template", "")).strip()})
        await bridge.call(ctx, models.apply_template, body=body, min_role="admin")
    except (ValidationError, ApiError) as exc:
        if isinstance(exc, ApiError) and (exc.status >= 500 or exc.status in (401, 403, 404)):
            raise
        return await _settings_page(ctx, bot, errors={"template": "Choose one of the templates."}, status=422)
    return redirect(f"/console/chatbots/{bot['id']}?done=template")


@page("POST", "/console/chatbots/{chatbot_id}/delete", min_role="admin")
async def delete(ctx: Ctx):
    bot = await _bot(ctx)
    if str(ctx.form.get("confirm", "")).strip() != bot["name"]:
        return await _settings_page(
            ctx, bot, errors={"confirm": "Type the chatbot's name exactly to confirm."}, status=422
        )
    await bridge.call(ctx, _models().delete_chatbot, min_role="admin")
    return redirect("/console/chatbots?done=deleted")


@page("POST", "/console/chatbots/{chatbot_id}/preview-url", min_role="admin")
async def preview_for_form(ctx: Ctx):
    """A signed preview URL for the form as it is now (unsaved), for the live preview iframe."""
    models = _models()
    bot = await _bot(ctx)
    _, body, errors = patch_from_form(ctx.form)
    try:
        patch = models.ChatbotPatch.model_validate(body)
    except ValidationError as exc:
        return json_ok({"errors": {**model_errors(exc), **errors}}, status=422)
    config = {
        **(bot["config"] or {}),
        **{k: v for k, v in patch.model_dump(mode="json")["config"].items() if v is not None},
    }
    return json_ok({"url": preview_url(ctx.request, bot["id"], body["name"] or bot["name"], config, bot["public_key"])})


# ---------------------------------------------------------------------- preview sandbox

_PUBLIC_KEYS = (
    "greeting",
    "language",
    "languages",
    "texts",
    "starters",
    "branding",
    "lead_capture",
    "nudges",
    "max_nudges",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def preview_url(request: web.Request, chatbot_id, name: str, config: dict, public_key: str) -> str:
    draft = {
        "c": str(chatbot_id),
        "n": name,
        "k": public_key,
        "x": int(time.time()) + PREVIEW_TTL,
        "cfg": {k: config[k] for k in _PUBLIC_KEYS if k in config},
    }
    raw = json.dumps(draft, separators=(",", ":")).encode()
    token = _b64(raw) + "." + sign(request.app[SETTINGS].secret_key, "console-preview", raw)
    return f"/console/preview/{token}"


def _draft(request: web.Request) -> dict:
    token = request.match_info.get("draft", "")
    body, _, signature = token.partition(".")
    try:
        raw = _unb64(body)
    except ValueError:
        raise web.HTTPNotFound() from None
    if not signature or not verify(request.app[SETTINGS].secret_key, "console-preview", raw, signature):
        raise web.HTTPNotFound()
    draft = json.loads(raw)
    if draft.get("x", 0) < time.time():
        raise web.HTTPGone(text="This preview has expired; reload the settings page.")
    return draft


async def preview_page(request: web.Request) -> web.Response:
    draft = _draft(request)
    try:
        script = widget_script_url(request.app)
    except KeyError:
        script = "/widget.js"
    from pyapp.console.web import ENV

    html = ENV.get_template("console/preview.html").render(
        script=script, key=draft["k"], api=f"{base_url(request)}{request.path}", name=draft["n"]
    )
    response = web.Response(text=html, content_type="text/html", charset="utf-8")
    secure_headers(response, PREVIEW_CSP)
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


async def _public_config(request: web.Request, draft: dict, locale: str | None) -> dict:
    allow = False  # the preview shows what the widget would show on this plan, in the browser's language
    return await request.app[POOL].fetchval(
        "SELECT parley.localize_widget_config(parley.chatbot_public_config($1, $2, $3), $2, $4)",
        draft["n"],
        draft["cfg"],
        allow,
        locale,
    )


async def preview_session(request: web.Request) -> web.Response:
    draft = _draft(request)
    try:
        sent = parse_json(await request.text())
    except ApiError:
        sent = {}
    locale = sent.get("locale") if isinstance(sent, dict) else None
    config = await _public_config(request, draft, locale if isinstance(locale, str) and len(locale) <= 35 else None)
    body = {
        "token": "preview",
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 900)),
        "conversation_id": str(uuid.uuid4()),
        "status": "bot",
        "config": config,
    }
    return web.Response(text=json_dumps(body), status=201, content_type="application/json")


PREVIEW_REPLY = "This is a preview: on your site, the bot answers here from its knowledge."


async def preview_socket(request: web.Request) -> web.WebSocketResponse:
    _draft(request)
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=16 * 1024)
    await ws.prepare(request)
    next_id = 1
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            break
        try:
            frame = parse_json(msg.data)
        except ApiError:
            continue
        kind = frame.get("type") if isinstance(frame, dict) else None
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if kind == "hello":
            await ws.send_str(json_dumps({"type": "ready", "conversation_id": str(uuid.uuid4()), "status": "bot"}))
        elif kind == "ping":
            await ws.send_str('{"type":"pong"}')
        elif kind == "message" and isinstance(frame.get("body"), str):
            await ws.send_str(
                json_dumps(
                    {
                        "type": "message",
                        "message": {
                            "id": next_id,
                            "author": "visitor",
                            "body": frame["body"][:4000],
                            "client_id": frame.get("client_id"),
                            "created_at": now,
                            "author_name": None,
                            "citations": [],
                            "stream_id": None,
                        },
                    }
                )
            )
            await ws.send_str(
                json_dumps(
                    {
                        "type": "message",
                        "message": {
                            "id": next_id + 1,
                            "author": "bot",
                            "body": PREVIEW_REPLY,
                            "client_id": None,
                            "created_at": now,
                            "author_name": None,
                            "citations": [],
                            "stream_id": None,
                        },
                    }
                )
            )
            next_id += 2
    return ws


def setup_preview(app: web.Application) -> None:
    app.router.add_get("/console/preview/{draft}", preview_page)
    app.router.add_post("/console/preview/{draft}/api/widget/sessions", preview_session)
    app.router.add_post("/console/preview/{draft}/api/widget/sessions/refresh", preview_session)
    app.router.add_get("/console/preview/{draft}/ws/visitor", preview_socket)
