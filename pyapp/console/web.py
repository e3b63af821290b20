"""Console page plumbing: one decorator gives session, CSRF, role gate, tenant transaction, HTML errors.

A page handler receives a `Ctx` whose `conn` is already inside the tenant transaction that
`parley.begin_request` opened with the page's minimum role, so the database itself refuses
an agent on an admin page (403 page). Every state-changing request must carry the
session's CSRF token (form field `_csrf` or header `X-CSRF-Token`) or it is refused with 403.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Container, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import BodyPartReader, web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from pyapp.console import session as sess
from pyapp.context import POOL, REQUEST_ID, SETTINGS, client_ip, json_dumps
from pyapp.db import Actor, tenant_tx
from pyapp.errors import ApiError, from_postgres
from pyapp.inputs import MALFORMED_BODY, parse_json
from pyapp.security import AccessClaims

log = logging.getLogger("parley.console")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static" / "console"
ROLE_RANK = {"agent": 1, "admin": 2, "owner": 3}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)


def _tojson(value: Any) -> Markup:
    """JSON safe inside <script type="application/json"> (no '<', '>', '&' or quotes raw)."""
    text = json_dumps(value)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e").replace("'", "\\u0027")
    return Markup(text)


def _timeago(value) -> str:
    if value is None:
        return ""
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    secs = int((now - value).total_seconds())
    if secs < 60:
        return "just now"
    if secs < 3600:
        return f"{secs // 60} min ago"
    if secs < 86400:
        return f"{secs // 3600} h ago"
    return value.strftime("%Y-%m-%d")


def _dt(value) -> str:
    """A timestamp for tables; accepts datetimes and the ISO strings that jsonb results carry."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value[:16].replace("T", " ")
    return value.strftime("%Y-%m-%d %H:%M")


def _safe_url(value) -> str:
    """Only http(s) URLs become links; anything else (javascript:, data:) is dropped."""
    text = str(value or "").strip()
    return text if re.match(r"^https?://", text, re.I) else ""


_QS_UNSAFE = re.compile(r"[^A-Za-z0-9=&%._+~-]")


def safe_query(value) -> str:
    """A query string from a form field, reduced to URL-safe characters (for redirects)."""
    return _QS_UNSAFE.sub("", str(value or ""))[:500]


def _audit_value(value) -> str:
    """One audited value for people: text as it is, nothing as an em dash, anything else as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["tojson"] = _tojson
ENV.filters["timeago"] = _timeago
ENV.filters["dt"] = _dt
ENV.filters["safe_url"] = _safe_url
ENV.filters["audit_value"] = _audit_value


@dataclass
class Ctx:
    """What a console handler gets: request, session, the open tenant transaction and the role."""

    request: web.Request
    session: sess.Session | None = None
    role: str | None = None
    form: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    nav: dict = field(default_factory=dict)
    multipart: Any = None  # streamed uploads: the reader, positioned after the CSRF part
    _conn: asyncpg.Connection | None = None

    @property
    def conn(self) -> asyncpg.Connection:
        """The page's tenant transaction (pages declared with tx=True run inside one)."""
        if self._conn is None:
            raise RuntimeError("this page runs outside a tenant transaction")
        return self._conn

    @conn.setter
    def conn(self, value: asyncpg.Connection | None) -> None:
        self._conn = value

    @property
    def signed_in(self) -> sess.Session:
        """The signed-in member's session (member pages only run with one)."""
        if self.session is None:
            raise RuntimeError("no session on this page")
        return self.session

    @property
    def claims(self) -> AccessClaims:
        """The signed-in member's session claims (member pages only run with a session)."""
        return self.signed_in.claims

    @property
    def pool(self) -> asyncpg.Pool:
        return self.request.app[POOL]

    @property
    def settings(self):
        return self.request.app[SETTINGS]

    @property
    def user_id(self) -> uuid.UUID:
        return self.claims.user_id

    @property
    def tenant_id(self) -> uuid.UUID | None:
        return self.claims.tenant_id

    @property
    def csrf(self) -> str:
        return sess.csrf_token(self.request, self.claims.session_id)

    @property
    def tenant(self) -> uuid.UUID:
        """The workspace the session is in (tx pages only run with one; others check tenant_id)."""
        if self.claims.tenant_id is None:
            raise RuntimeError("no workspace chosen on this page")
        return self.claims.tenant_id

    def actor(self, min_role: str = "agent") -> Actor:
        return Actor(
            tenant_id=self.tenant,
            kind="user",
            actor_id=str(self.user_id),
            session_id=self.claims.session_id,
            ip=client_ip(self.request),
            request_id=self.request.get(REQUEST_ID),
            min_role=min_role,
        )

    def tx(self, min_role: str = "agent"):
        """A separate tenant transaction (the page's own is `conn`)."""
        return tenant_tx(self.pool, self.actor(min_role))

    def at_least(self, role: str) -> bool:
        return ROLE_RANK.get(self.role or "", 0) >= ROLE_RANK[role]

    @property
    def wants_json(self) -> bool:
        return wants_json(self.request)

    def form_uuid(self, name: str, missing: str) -> uuid.UUID:
        """A form field naming a row by its id; 404 `missing` when it is not an id."""
        try:
            return uuid.UUID(str(self.form.get(name, "")))
        except ValueError:
            raise ApiError(404, "not_found", missing) from None

    def uuid(self, name: str) -> uuid.UUID:
        try:
            return uuid.UUID(self.request.match_info[name])
        except (KeyError, ValueError):
            raise ApiError(404, "not_found", "No such page.") from None

    @asynccontextmanager
    async def savepoint(self):
        """Run a step that may fail (a SQL rule) without aborting the page's transaction."""
        async with self.conn.transaction():
            yield self.conn

    def carry_session(self, response: web.StreamResponse) -> None:
        """Put a renewed session's cookie on `response` (before it is sent: a streamed page calls
        this itself; the page wrapper does it for every other response)."""
        if self.session is not None and self.session.renewed:
            sess.set_session_cookie(self.request, response, self.session.access_token, self.session.refresh_token)

    def render(self, template: str, status: int = 200, **values) -> web.Response:
        return render(self.request, template, status=status, ctx=self, **values)


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "") or request.headers.get("X-Requested-With") == "fetch"


def render(request: web.Request, template: str, *, status: int = 200, ctx: Ctx | None = None, **values) -> web.Response:
    csrf = values.pop("csrf", "")
    if ctx is not None and ctx.session is not None:
        csrf = ctx.csrf
    base = {"ctx": ctx, "request": request, "path": request.path, "csrf": csrf}
    html = ENV.get_template(f"console/{template}").render(**base, **values)
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    secure_headers(response)
    return response


def secure_headers(response: web.StreamResponse, csp: str = CSP) -> None:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    if "frame-ancestors 'none'" in csp:
        response.headers["X-Frame-Options"] = "DENY"


def error_response(
    request: web.Request, ctx: Ctx | None, status: int, code: str, message: str, details: dict | None = None
) -> web.Response:
    if wants_json(request):
        body = {"error": {"code": code, "message": message, **({"details": details} if details else {})}}
        resp = web.json_response(body, status=status)
        secure_headers(resp)
        return resp
    return render(
        request,
        "error.html",
        status=status,
        ctx=ctx if ctx and ctx.session else None,
        code=code,
        message=message,
        error_status=status,
    )


@asynccontextmanager
async def sql_refusal(conn: asyncpg.Connection):
    """A savepoint for a form's SQL call: a refusal raised there (a 4xx from parley.raise_error)
    comes out as ApiError for the page to show; a real fault passes on."""
    try:
        async with conn.transaction():
            yield conn
    except asyncpg.PostgresError as exc:
        refused = from_postgres(exc)
        if refused is None:
            raise
        raise refused from None


def redirect(location: str) -> web.Response:
    """303 See Other as a plain response (so cookies can still be set on it)."""
    if not location.startswith("/") or location.startswith("//"):
        location = "/console/"
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]
ROUTES: list[tuple[str, str, Callable]] = []


def page(method: str, path: str, *, min_role: str = "agent", tx: bool = True, stream: bool = False):
    """Declare a console route; signed-in only, CSRF-checked when not GET, gated on min_role.

    With `stream=True` a multipart body is not read into memory: its first part must be the
    CSRF token, and the handler continues from `ctx.multipart` (file uploads).
    """

    def deco(fn: Handler):
        async def handler(request: web.Request) -> web.StreamResponse:
            ctx = Ctx(request=request)
            response: web.StreamResponse
            try:
                ctx.session = await sess.load_session(request)
                if ctx.session is None:
                    if request.method in ("GET", "HEAD") and not wants_json(request):
                        nxt = request.path_qs if request.path != "/console/sign-in" else "/console/"
                        response = redirect(f"/console/sign-in?next={quote(nxt, safe='')}")
                    else:
                        response = error_response(
                            request, None, 401, "unauthenticated", "Your session has ended; sign in again."
                        )
                    sess.clear_session_cookie(request, response)
                    return response
                if request.method not in ("GET", "HEAD"):
                    if stream and request.content_type == "multipart/form-data":
                        presented = await _first_part_csrf(ctx)
                    else:
                        await _read_form(ctx)
                        presented = request.headers.get(sess.CSRF_HEADER) or ctx.form.get(sess.CSRF_FIELD)
                    if not sess.csrf_ok(request, ctx.session.claims.session_id, presented):
                        return error_response(
                            request,
                            ctx,
                            403,
                            "csrf_failed",
                            "This form has expired or did not come from the console. Reload the page and try again.",
                        )
                if ctx.tenant_id is None and tx:
                    response = redirect("/console/workspaces")
                elif tx:
                    async with tenant_tx(ctx.pool, ctx.actor(min_role)) as conn:
                        ctx.conn = conn
                        ctx.role = await conn.fetchval("SELECT current_setting('app.role', true)")
                        ctx.nav = await _nav(ctx)
                        response = await fn(ctx)
                        ctx.conn = None
                else:
                    response = await fn(ctx)
            except web.HTTPException as exc:
                if exc.status >= 400:
                    return error_response(request, ctx, exc.status, "http_error", exc.reason)
                raise
            except ApiError as exc:
                response = _api_error(request, ctx, exc)
            except asyncpg.PostgresError as exc:
                mapped = _database_error(request, exc)
                response = _api_error(request, ctx, mapped)
            if response.status != 401 and not response.prepared:  # a streamed page carried it itself
                ctx.carry_session(response)
            return response

        return _register(method, path, fn, handler)

    return deco


RowAction = Callable[[Ctx, uuid.UUID], Awaitable[Any]]


def button(path: str, back: str, *, min_role: str = "agent") -> Callable[[RowAction], RowAction]:
    """Declare the POST route of a button on one row: the decorated function does the work with
    the id the path names (404 when it is not an id), then the page goes `back` (a 303)."""
    (param,) = re.findall(r"{(\w+)}", path)

    def deco(action: RowAction) -> RowAction:
        async def pressed(ctx: Ctx) -> web.StreamResponse:
            await action(ctx, ctx.uuid(param))
            return redirect(back)

        pressed.__name__ = action.__name__
        page("POST", path, min_role=min_role)(pressed)
        return action

    return deco


def _register(method: str, path: str, fn: Handler, handler) -> Handler:
    """Add a console route (its wrapped handler, named as the page function) and hand back the page function."""
    handler.__name__ = fn.__name__
    ROUTES.append((method, path, handler))
    return fn


def done_flash(ctx: Ctx, messages: Mapping[str, str]) -> str | None:
    """The confirmation a page shows after a redirect with ?done=<what>."""
    return messages.get(ctx.request.query.get("done", ""))


@dataclass(frozen=True)
class Shown:
    """How a page with a form is shown: the answer's status, errors by field ("__all__": the
    whole form's), the values typed back, and a confirmation of its own."""

    status: int = 200
    errors: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    flash: str | None = None

    @classmethod
    def refused(cls, exc: ApiError | asyncpg.PostgresError, values: Mapping[str, Any], field: str = "__all__") -> Shown:
        """The form again with its values, and the refusal (its status and message) beside `field`."""
        failed = refusal(exc)
        return cls(failed.status, {field: failed.message}, values)


FIRST_VIEW = Shown()


def form_refused(exc: ApiError, field: str, values: Mapping[str, Any] | None = None) -> Shown:
    """An API handler's refusal of a form, shown beside `field` with the values typed back; a
    fault (5xx) or a refusal of the page itself (401, 403, 404) passes on to the error page."""
    if exc.status >= 500 or exc.status in (401, 403, 404):
        raise exc
    return Shown(exc.status, {field: exc.message}, values or {})


def form_page(ctx: Ctx, template: str, shown: Shown, confirmations: Mapping[str, str], **data) -> web.Response:
    """A page with a form, as `shown`: its own confirmation, else the one of `confirmations` for the
    ?done=<what> the page was redirected with."""
    flash = shown.flash or done_flash(ctx, confirmations)
    return ctx.render(template, status=shown.status, errors=shown.errors, values=shown.values, flash=flash, **data)


def form_int(
    raw, field: str, lo: int, hi: int, errors: dict, *, what: str = "A whole number.", bounds: str | None = None
) -> int | None:
    """An optional whole number from a form field (None when empty); a bad one adds `what` or
    `bounds` (default "Between lo and hi.") to errors[field]."""
    raw = str(raw or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[field] = what
        return None
    if not lo <= value <= hi:
        errors[field] = bounds or f"Between {lo} and {hi}."
    return value


def refusal(exc: ApiError | asyncpg.PostgresError) -> ApiError:
    """A form's failure to show on its page: an ApiError, or the refusal a database error stands
    for; any other database error is re-raised (the page wrapper answers 500)."""
    if isinstance(exc, ApiError):
        return exc
    mapped = from_postgres(exc)
    if mapped is None:
        raise exc
    return mapped


def shown_refusal(ctx: Ctx, exc: asyncpg.PostgresError, statuses: Container[int] = range(400, 500)) -> ApiError:
    """The refusal a SQL error stands for, for a page to show beside its form; a fault, a refusal
    with a status outside `statuses`, or any error of a request that wants JSON is re-raised, for
    the page wrapper to answer."""
    mapped = from_postgres(exc)
    if mapped is None or mapped.status not in statuses or ctx.wants_json:
        raise exc
    return mapped


def _database_error(request: web.Request, exc: asyncpg.PostgresError) -> ApiError:
    """The refusal a database error stands for; one the SQL rules did not raise is logged, a 500."""
    mapped = from_postgres(exc)
    if mapped is None:
        log.exception("console database error", extra={"request_id": request.get(REQUEST_ID)})
        mapped = ApiError(500, "internal", "Something went wrong on our side.")
    return mapped


def _api_error(request: web.Request, ctx: Ctx, exc: ApiError) -> web.Response:
    if exc.status == 401 and not wants_json(request):
        response = redirect(f"/console/sign-in?next={quote(request.path_qs, safe='')}")
        sess.clear_session_cookie(request, response)
        return response
    if exc.code == "not_a_member" and not wants_json(request):
        return redirect("/console/workspaces")  # removed from this workspace: pick another
    if exc.status == 403 and exc.code == "forbidden":
        return error_response(
            request,
            ctx,
            403,
            "forbidden",
            "Your role cannot open this page. Ask an admin or the owner of the workspace.",
        )
    return error_response(request, ctx, exc.status, exc.code, exc.message, exc.details)


async def _first_part_csrf(ctx: Ctx) -> str | None:
    """Read only the first multipart part, which must be the CSRF field; keep the reader for the handler."""
    presented = ctx.request.headers.get(sess.CSRF_HEADER)
    try:
        reader = await ctx.request.multipart()
        part = await reader.next()
        if isinstance(part, BodyPartReader) and part.name == sess.CSRF_FIELD:
            presented = presented or (await part.text())[:200]
        elif presented is None:
            return None
    except MALFORMED_BODY:
        return None
    ctx.multipart = reader
    return presented


async def _read_form(ctx: Ctx) -> None:
    request = ctx.request
    ctype = request.content_type
    if ctype == "application/json":
        data = parse_json(await request.read())
        ctx.form = data if isinstance(data, dict) else {}
        return
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            post = await request.post()
        except MALFORMED_BODY:  # multipart without a (valid) boundary, a charset that does not exist
            raise ApiError(400, "invalid_form", "The form body is malformed.") from None
        form: dict = {}
        for key, value in post.items():
            if isinstance(value, web.FileField):
                ctx.files.setdefault(key, []).append(value)
            elif key in form:
                form[key] = form[key] if isinstance(form[key], list) else [form[key]]
                form[key].append(value)
            else:
                form[key] = value
        ctx.form = form


async def _nav(ctx: Ctx) -> dict:
    """Workspace name, the badges in the navigation (waiting and unread conversations), the billing and verification
    banners, and whether the person is staff (the back-office link)."""
    from pyapp.console import queries

    nav = {
        "tenant_name": await ctx.conn.fetchval("SELECT name FROM parley.tenants WHERE id = $1", ctx.tenant_id),
        "billing": await ctx.conn.fetchval("SELECT parley.billing_banner()"),
    }
    person = await ctx.conn.fetchrow(
        "SELECT u.email_verified_at IS NULL AS unverified, parley.is_staff(u.id, $1) AS staff"
        " FROM parley.users u WHERE u.id = parley.current_user_id()",
        ctx.claims.session_id,
    )
    nav["unverified"], nav["staff"] = (person["unverified"], person["staff"]) if person else (None, False)
    try:
        async with ctx.conn.transaction():
            counts = await queries.fetchrow(ctx.conn, "inbox_counts")
        nav["counts"] = dict(counts) if counts else {}
    except asyncpg.PostgresError:
        nav["counts"] = {}  # conversations schema not installed yet
    return nav


def json_ok(data: Any = None, status: int = 200) -> web.Response:
    resp = web.json_response(data if data is not None else {"ok": True}, status=status, dumps=json_dumps)
    secure_headers(resp)
    return resp


def form_errors(exc) -> dict[str, str]:
    """pydantic ValidationError → {field: message} for display next to each field."""
    out: dict[str, str] = {}
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "__all__"
        msg = err["msg"].removeprefix("Value error, ")
        out.setdefault(name, msg)
    return out


def jsonable(value: Any) -> Any:
    return json.loads(json_dumps(value))


def public_page(method: str, path: str):
    """A console route that needs no session (sign-in, sign-up, password reset, invite landing).

    POSTs are checked against the double-submit token of the sign-in forms instead of the
    session's CSRF token. `ctx.session` is loaded when a valid cookie is present.
    """

    def deco(fn: Handler):
        async def handler(request: web.Request) -> web.StreamResponse:
            ctx = Ctx(request=request)
            try:
                ctx.session = await sess.load_session(request)
                if request.method not in ("GET", "HEAD"):
                    await _read_form(ctx)
                    presented = request.headers.get(sess.CSRF_HEADER) or ctx.form.get(sess.CSRF_FIELD)
                    if not sess.pre_csrf_ok(request, presented):
                        return error_response(
                            request, None, 403, "csrf_failed", "This form has expired. Reload the page and try again."
                        )
                response = await fn(ctx)
            except ApiError as exc:
                response = error_response(request, None, exc.status, exc.code, exc.message, exc.details)
            except asyncpg.PostgresError as exc:
                mapped = _database_error(request, exc)
                response = error_response(request, None, mapped.status, mapped.code, mapped.message)
            if "Set-Cookie" not in response.headers:
                ctx.carry_session(response)
            return response

        return _register(method, path, fn, handler)

    return deco


def render_public(ctx: Ctx, template: str, *, status: int = 200, **values) -> web.Response:
    """Render a session-less form page with its double-submit token (setting the cookie if new)."""
    token, fresh = sess.pre_csrf(ctx.request)
    response = render(ctx.request, template, status=status, ctx=None, csrf=token, **values)
    if fresh:
        sess.set_pre_cookie(ctx.request, response, token)
    return response
