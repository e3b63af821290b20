"""Inbox: conversation tabs, the open conversation (transcript, visitor, actions) and canned replies.

Pages render the current state; console.js keeps them live from /ws/agent by re-fetching the
list fragment and the messages after the last one shown. Every action is a POST with the
session's CSRF token that calls the conversations state machine in SQL.
"""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, field_validator

from pyapp import types
from pyapp.console import queries
from pyapp.console.web import ENV, Ctx, button, form_errors, json_ok, page, redirect, shown_refusal
from pyapp.errors import ApiError, from_postgres

SURFACE = "console"  # the actions registry's name for this surface (sql/57_actions.sql)
TABS = (("new", "New"), ("waiting", "Waiting for a human"), ("mine", "Mine"), ("all", "All"), ("closed", "Closed"))
TAB_KEYS = {key for key, _ in TABS}
# Each tab as parley.inbox_conversations filters it: a status (or 'open', 'new'), and whether only the member's own.
TAB_FILTERS = {
    "new": ("new", False),
    "waiting": ("waiting_human", False),
    "mine": ("open", True),
    "all": ("open", False),
    "closed": ("closed", False),
}
STATUS_LABELS = {
    "bot": "With the bot",
    "waiting_human": "Waiting for a human",
    "human": "With an agent",
    "closed": "Closed",
}


def _tab(request: web.Request) -> str:
    tab = request.query.get("tab", "")
    return tab if tab in TAB_KEYS else "all"


def _search(request: web.Request) -> str | None:
    q = request.query.get("q", "").strip()
    return q[:200] or None


async def _counts(ctx: Ctx) -> dict:
    counts = dict(ctx.nav.get("counts") or {})
    counts["closed"] = await queries.fetchval(ctx.conn, "inbox_closed_count")
    return counts


async def _list(ctx: Ctx, tab: str, q: str | None) -> list:
    status, own = TAB_FILTERS[tab]
    return await queries.fetch(ctx.conn, "inbox_list", status, ctx.user_id if own else None, q, 100)


def _render_fragment(name: str, ctx: Ctx, **values) -> str:
    return ENV.get_template(f"console/{name}").render(ctx=ctx, csrf=ctx.csrf, **values)


@page("GET", "/console/")
async def home(ctx: Ctx):
    return redirect("/console/inbox")


@page("GET", "/console/inbox")
async def inbox(ctx: Ctx):
    return await _inbox_page(ctx, None)


@page("GET", "/console/conversations/{conversation_id}")
async def conversation_page(ctx: Ctx):
    return await _inbox_page(ctx, ctx.uuid("conversation_id"))


async def _pane(ctx: Ctx, conversation_id: uuid.UUID) -> dict:
    conv = await queries.fetchrow(ctx.conn, "conversation", conversation_id)
    if conv is None:
        raise ApiError(404, "not_found", "No such conversation.")
    messages = await queries.fetch(ctx.conn, "transcript", conversation_id, 0)
    last_id = messages[-1]["id"] if messages else 0
    if messages:
        async with ctx.savepoint():
            await ctx.conn.execute("SELECT parley.mark_conversation_read($1, $2)", conversation_id, last_id)
    members = await queries.fetch(ctx.conn, "members")
    others = await queries.fetch(ctx.conn, "other_visitor_conversations", conversation_id)
    actions = await ctx.conn.fetchval("SELECT parley.conversation_actions($1, $2)", conversation_id, SURFACE)
    return {
        "conv": conv,
        "actions": {a["key"]: a for a in actions},
        "others": [{**o, "status_label": STATUS_LABELS.get(o["status"], o["status"])} for o in others],
        "messages": messages,
        "last_id": last_id,
        "members": members,
        "status_label": STATUS_LABELS.get(conv["status"], conv["status"]),
    }


async def _inbox_page(ctx: Ctx, conversation_id: uuid.UUID | None):
    tab, q = _tab(ctx.request), _search(ctx.request)
    pane = await _pane(ctx, conversation_id) if conversation_id else None
    if pane is not None:
        ctx.nav = await _refresh_nav(ctx)
    return await _render_inbox(ctx, tab, q, pane, conversation_id, flash=await _done_flash(ctx), errors={})


async def _render_inbox(ctx: Ctx, tab: str, q: str | None, pane, current, *, status: int = 200, **extra):
    """The inbox page: the tab's list, its counts, the open conversation's pane, canned replies."""
    rows = await _list(ctx, tab, q)
    canned = await queries.fetch(ctx.conn, "canned_replies")
    return ctx.render(
        "inbox.html",
        status=status,
        tab=tab,
        tabs=TABS,
        q=q or "",
        rows=rows,
        counts=await _counts(ctx),
        pane=pane,
        current=current,
        canned=[dict(shortcut=c["shortcut"], body=c["body"]) for c in canned],
        **extra,
    )


async def _refresh_nav(ctx: Ctx) -> dict:
    nav = dict(ctx.nav)
    nav["counts"] = dict(await queries.fetchrow(ctx.conn, "inbox_counts") or {})
    return nav


@page("GET", "/console/inbox/list")
async def inbox_list(ctx: Ctx):
    """The list fragment and counts, for live refresh."""
    tab, q = _tab(ctx.request), _search(ctx.request)
    current = ctx.request.query.get("c") or None
    rows = await _list(ctx, tab, q)
    counts = await _counts(ctx)
    html = _render_fragment("_inbox_list.html", ctx, rows=rows, tab=tab, q=q or "", current=current)
    return json_ok({"html": html, "counts": counts})


@page("GET", "/console/conversations/{conversation_id}/messages")
async def conversation_messages(ctx: Ctx):
    """Messages after ?after=N as an HTML fragment, and the conversation's status."""
    conversation_id = ctx.uuid("conversation_id")
    try:
        after = max(0, int(ctx.request.query.get("after", "0")))
    except ValueError:
        after = 0
    conv = await queries.fetchrow(ctx.conn, "conversation", conversation_id)
    if conv is None:
        raise ApiError(404, "not_found", "No such conversation.")
    messages = await queries.fetch(ctx.conn, "transcript", conversation_id, after)
    last_id = messages[-1]["id"] if messages else after
    if messages and ctx.request.query.get("read") == "1":
        async with ctx.savepoint():
            await ctx.conn.execute("SELECT parley.mark_conversation_read($1, $2)", conversation_id, last_id)
    html = _render_fragment("_messages.html", ctx, messages=messages)
    return json_ok({"html": html, "last_id": last_id, "status": conv["status"], "assignee_id": conv["assignee_id"]})


@page("GET", "/console/conversations/{conversation_id}/pane")
async def conversation_pane(ctx: Ctx):
    """The whole conversation pane (after a state change), as a fragment."""
    pane = await _pane(ctx, ctx.uuid("conversation_id"))
    canned = await queries.fetch(ctx.conn, "canned_replies")
    html = _render_fragment(
        "_conversation.html",
        ctx,
        pane=pane,
        tab=_tab(ctx.request),
        errors={},
        canned=[dict(shortcut=c["shortcut"], body=c["body"]) for c in canned],
    )
    return json_ok({"html": html, "last_id": pane["last_id"], "status": pane["conv"]["status"]})


def _flash(request: web.Request) -> str | None:
    return {"replied": "Reply sent.", "saved": "Saved.", "deleted": "Deleted."}.get(request.query.get("done", ""))


async def _done_flash(ctx: Ctx) -> str | None:
    """The flash after a redirect: ?done=<action key> says the registry's done text."""
    done = ctx.request.query.get("done", "")
    if done and done not in ("replied", "saved", "deleted") and done.isascii() and len(done) <= 40:
        return await ctx.conn.fetchval(
            "SELECT parley.action_done(a.key, 'en') FROM parley.conversation_action_catalog a WHERE a.key = $1", done
        )
    return _flash(ctx.request)


# ---------------------------------------------------------------------------------- actions


def _written(value: str, empty: str) -> str:
    """A text box of an inbox form: the text rule (pyapp/types.py: refused, never stripped, so
    what the agent sees in the form is what is sent), then trimmed; `empty` when nothing is left."""
    try:
        types.text(value)
    except ValueError as exc:
        raise ValueError(f"The text {exc}: remove them and send again.") from None
    value = value.strip()
    if not value:
        raise ValueError(empty)
    return value


class ReplyForm(BaseModel):
    body: str = Field(min_length=1, max_length=types.MESSAGE_BODY_MAX)

    @field_validator("body")
    @classmethod
    def _clean(cls, value: str) -> str:
        return _written(value, "Write something first.")


def _back(ctx: Ctx, conversation_id: uuid.UUID, done: str) -> str:
    tab = ctx.form.get("tab") if ctx.form.get("tab") in TAB_KEYS else "all"
    return f"/console/conversations/{conversation_id}?tab={tab}&done={done}"


async def _refused(ctx: Ctx, conversation_id: uuid.UUID, exc: asyncpg.PostgresError, field: str):
    """A rule SQL refused (state, role, input): shown beside the actions, or the JSON error."""
    refused = shown_refusal(ctx, exc)
    return await _rerender(ctx, conversation_id, {field: refused.message}, status=refused.status)


@page("POST", "/console/conversations/{conversation_id}/reply")
async def conversation_reply(ctx: Ctx):
    """A reply to the visitor (a message, not a registry action)."""
    conversation_id = ctx.uuid("conversation_id")
    try:
        data = ReplyForm.model_validate(ctx.form)
    except ValidationError as exc:
        return await _invalid(ctx, conversation_id, form_errors(exc))
    try:
        async with ctx.savepoint() as conn:
            await conn.execute("SELECT 1 FROM parley.agent_reply($1, $2)", conversation_id, data.body)
    except asyncpg.PostgresError as exc:
        return await _refused(ctx, conversation_id, exc, "body")
    if ctx.wants_json:
        return json_ok({"ok": True, "done": "replied"})
    return redirect(_back(ctx, conversation_id, "replied"))


async def _invalid(ctx: Ctx, conversation_id: uuid.UUID, errors: dict):
    if ctx.wants_json:
        raise ApiError(422, "validation_failed", next(iter(errors.values())), {"fields": errors})
    return await _rerender(ctx, conversation_id, errors)


async def _perform(ctx: Ctx, key: str):
    """An action of the registry (the buttons, the note, assign, codename): its input is the form's
    fields named after the action's arguments; text inputs meet the text rule early (pyapp/types.py,
    the copy of SQL's), everything else is parley.perform_action's to check."""
    conversation_id = ctx.uuid("conversation_id")
    catalog = await ctx.conn.fetchval("SELECT parley.action_catalog($1)", SURFACE)
    action = next((a for a in catalog if a["key"] == key), None)
    if action is None:
        raise ApiError(404, "unknown_action", "There is no such action here.")
    data: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name in action["args"]:
        if name not in ctx.form:
            continue
        value = str(ctx.form[name])
        if action["input"]["properties"][name].get("x-text"):
            try:
                types.text(value)
            except ValueError as exc:  # shown in the composer (its body) or beside the actions
                errors["body" if name == "body" else "__all__"] = f"The text {exc}: remove them and send again."
                continue
            value = value.strip()
        data[name] = value
    if errors:
        return await _invalid(ctx, conversation_id, errors)
    try:
        async with ctx.savepoint() as conn:
            await conn.fetchval("SELECT parley.perform_action($1, $2, $3, $4)", conversation_id, key, data, SURFACE)
    except asyncpg.PostgresError as exc:
        return await _refused(ctx, conversation_id, exc, "body" if "body" in action["args"] else "__all__")
    if ctx.wants_json:
        return json_ok({"ok": True, "done": key})
    return redirect(_back(ctx, conversation_id, key))


async def _rerender(ctx: Ctx, conversation_id: uuid.UUID, errors: dict, status: int = 422):
    tab = ctx.form["tab"] if ctx.form.get("tab") in TAB_KEYS else "all"
    pane = await _pane(ctx, conversation_id)
    return await _render_inbox(
        ctx, tab, None, pane, conversation_id, status=status, errors=errors, draft=ctx.form.get("body", ""), flash=None
    )


class ReadForm(BaseModel):
    message_id: int = Field(ge=0)


@page("POST", "/console/conversations/{conversation_id}/read")
async def conversation_read(ctx: Ctx):
    try:
        data = ReadForm.model_validate(ctx.form)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_failed", "message_id must be a message id.", {"fields": form_errors(exc)}
        ) from None
    upto = await ctx.conn.fetchval(
        "SELECT parley.mark_conversation_read($1, $2)", ctx.uuid("conversation_id"), data.message_id
    )
    return json_ok({"last_read_message_id": upto})


@page("POST", "/console/conversations/{conversation_id}/{action}")
async def conversation_action(ctx: Ctx):
    """Any action of the registry on the console surface (declared after the fixed paths above)."""
    return await _perform(ctx, ctx.request.match_info["action"])


# ---------------------------------------------------------------------------- canned replies


class CannedForm(BaseModel):
    shortcut: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    body: str = Field(min_length=1, max_length=types.MESSAGE_BODY_MAX)

    @field_validator("shortcut", mode="before")
    @classmethod
    def _lower(cls, value):
        return str(value or "").strip().lstrip("/").lower()

    @field_validator("body")
    @classmethod
    def _strip(cls, value: str) -> str:
        return _written(value, "Write the reply text.")


SHORTCUT_HELP = "Type /shortcut in a reply to insert it: 1-32 lower-case letters, digits, - or _."


async def _canned_page(ctx: Ctx, *, values=None, errors=None, editing=None, status=200, flash=None):
    rows = await queries.fetch(ctx.conn, "canned_replies")
    return ctx.render(
        "canned.html",
        status=status,
        rows=rows,
        values=values or {},
        errors=errors or {},
        editing=editing,
        help=SHORTCUT_HELP,
        flash=flash or _flash(ctx.request),
    )


@page("GET", "/console/canned")
async def canned_list(ctx: Ctx):
    editing = None
    if ctx.request.query.get("edit"):
        try:
            editing = await queries.fetchrow(ctx.conn, "canned_reply", uuid.UUID(ctx.request.query["edit"]))
        except ValueError:
            editing = None
    values = dict(editing) if editing else {}
    return await _canned_page(ctx, values=values, editing=editing)


@page("POST", "/console/canned")
async def canned_save(ctx: Ctx):
    reply_id = None
    if ctx.form.get("id"):
        try:
            reply_id = uuid.UUID(str(ctx.form["id"]))
        except ValueError:
            raise ApiError(404, "not_found", "No such canned reply.") from None
    editing = {"id": reply_id} if reply_id else None
    try:
        data = CannedForm.model_validate(ctx.form)
    except ValidationError as exc:
        errors = form_errors(exc)
        if "shortcut" in errors:
            errors["shortcut"] = SHORTCUT_HELP
        return await _canned_page(ctx, values=ctx.form, errors=errors, editing=editing, status=422)
    try:
        async with ctx.savepoint() as conn:
            await conn.execute("SELECT parley.save_canned_reply($1, $2, $3)", reply_id, data.shortcut, data.body)
    except asyncpg.PostgresError as exc:
        mapped = from_postgres(exc)
        if mapped is None or mapped.status >= 500 or mapped.status == 404:
            raise
        field = "body" if mapped.code == "invalid_body" else "shortcut"
        return await _canned_page(
            ctx, values=ctx.form, errors={field: mapped.message}, editing=editing, status=mapped.status
        )
    return redirect("/console/canned?done=saved")


@button("/console/canned/{reply_id}/delete", "/console/canned?done=deleted")
async def canned_delete(ctx: Ctx, reply_id: uuid.UUID):
    await ctx.conn.execute("SELECT parley.delete_canned_reply($1)", reply_id)
