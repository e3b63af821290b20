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
from pyapp.console.web import ENV, Ctx, form_errors, json_ok, page, redirect
from pyapp.errors import ApiError, from_postgres

TABS = (("new", "New"), ("waiting", "Waiting for a human"), ("mine", "Mine"), ("all", "All"), ("closed", "Closed"))
TAB_KEYS = {key for key, _ in TABS}
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
    return await queries.fetch(ctx.conn, "inbox_list", tab, q, 100)


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
    return {
        "conv": conv,
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
    return await _render_inbox(ctx, tab, q, pane, conversation_id, flash=_flash(ctx.request), errors={})


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
    return {
        "claimed": "You took this conversation.",
        "replied": "Reply sent.",
        "noted": "Note added.",
        "assigned": "Conversation assigned.",
        "released": "Handed back to the bot.",
        "closed": "Conversation closed.",
        "reopened": "Conversation reopened.",
        "saved": "Saved.",
        "deleted": "Deleted.",
    }.get(request.query.get("done", ""))


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


class AssignForm(BaseModel):
    assignee_id: uuid.UUID | None = None

    @field_validator("assignee_id", mode="before")
    @classmethod
    def _empty(cls, value):
        return value or None


ACTIONS = {
    # action: (SQL, form model or None, flash code)
    "claim": ("SELECT 1 FROM parley.claim_conversation($1)", None, "claimed"),
    "release": ("SELECT 1 FROM parley.release_conversation($1)", None, "released"),
    "close": ("SELECT 1 FROM parley.close_conversation($1)", None, "closed"),
    "reopen": ("SELECT 1 FROM parley.reopen_conversation($1)", None, "reopened"),
    "reply": ("SELECT 1 FROM parley.agent_reply($1, $2)", ReplyForm, "replied"),
    "note": ("SELECT 1 FROM parley.add_note($1, $2)", ReplyForm, "noted"),
    "assign": ("SELECT 1 FROM parley.assign_conversation($1, $2)", AssignForm, "assigned"),
}


def _back(ctx: Ctx, conversation_id: uuid.UUID, done: str) -> str:
    tab = ctx.form.get("tab") if ctx.form.get("tab") in TAB_KEYS else "all"
    return f"/console/conversations/{conversation_id}?tab={tab}&done={done}"


async def _act(ctx: Ctx, action: str):
    conversation_id = ctx.uuid("conversation_id")
    sql, model, done = ACTIONS[action]
    args: list = [conversation_id]
    if model is not None:
        try:
            data = model.model_validate(ctx.form)
        except ValidationError as exc:
            errors = form_errors(exc)
            if ctx.wants_json:
                raise ApiError(422, "validation_failed", next(iter(errors.values())), {"fields": errors}) from None
            return await _rerender(ctx, conversation_id, errors)
        args.append(data.body if isinstance(data, ReplyForm) else data.assignee_id)
    try:
        async with ctx.savepoint() as conn:
            await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:  # a rule of the state machine: show it beside the actions
        mapped = from_postgres(exc)
        if mapped is None or mapped.status >= 500 or ctx.wants_json:
            raise
        field = "body" if model is ReplyForm else "__all__"
        return await _rerender(ctx, conversation_id, {field: mapped.message}, status=mapped.status)
    if ctx.wants_json:
        return json_ok({"ok": True, "done": done})
    return redirect(_back(ctx, conversation_id, done))


async def _rerender(ctx: Ctx, conversation_id: uuid.UUID, errors: dict, status: int = 422):
    tab = ctx.form["tab"] if ctx.form.get("tab") in TAB_KEYS else "all"
    pane = await _pane(ctx, conversation_id)
    return await _render_inbox(
        ctx, tab, None, pane, conversation_id, status=status, errors=errors, draft=ctx.form.get("body", ""), flash=None
    )


def _action_route(action: str):
    async def handler(ctx: Ctx):
        return await _act(ctx, action)

    handler.__name__ = f"conversation_{action}"
    page("POST", f"/console/conversations/{{conversation_id}}/{action}")(handler)


for _name in ACTIONS:
    _action_route(_name)


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


@page("POST", "/console/canned/{reply_id}/delete")
async def canned_delete(ctx: Ctx):
    await ctx.conn.execute("SELECT parley.delete_canned_reply($1)", ctx.uuid("reply_id"))
    return redirect("/console/canned?done=deleted")
