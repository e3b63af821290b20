"""The operator console at /console/: server-rendered pages (jinja2, autoescape on) over the same SQL.

`setup(app)` registers the page routes and the console's static files. Sign-in sets an
HttpOnly cookie scoped to /console holding the session; /api stays bearer-only.
"""

from __future__ import annotations

from aiohttp import web as aioweb

from pyapp.console.web import ROUTES, STATIC, Ctx, page
from pyapp.errors import ApiError


@page("GET", "/console/__not_found__")
async def _not_found(ctx: Ctx):
    raise ApiError(404, "not_found", "There is no such page in the console.")


async def not_found(request: aioweb.Request) -> aioweb.StreamResponse:
    """Any other /console/... address: an HTML 404 (signed in) or the sign-in page."""
    handler = next(h for m, p, h in ROUTES if p == "/console/__not_found__")
    return await handler(request)


async def to_console_root(request: aioweb.Request) -> aioweb.StreamResponse:
    return aioweb.Response(status=303, headers={"Location": "/console/"})


async def favicon(request: aioweb.Request) -> aioweb.StreamResponse:
    """The icon browsers ask every page for (was a 404 in every console page's log)."""
    return aioweb.FileResponse(
        STATIC / "favicon.ico", headers={"Content-Type": "image/x-icon", "Cache-Control": "public, max-age=86400"}
    )


def setup(app: aioweb.Application) -> None:
    # Importing the page modules declares their routes on ROUTES.
    from pyapp.channels import console as _alerts  # noqa: F401
    from pyapp.channels import telegram_console as _telegram  # noqa: F401
    from pyapp.console import (  # noqa: F401
        account,
        ai,
        analytics,
        auth,
        billing,
        chatbots,
        inbox,
        knowledge,
        leads,
        onboarding,
        privacy,
        sso,
        system_texts,
        team,
    )
    from pyapp.domains import console as _domains  # noqa: F401
    from pyapp.outbox import console as _outbox  # noqa: F401
    from pyapp.webhooks import console as _webhooks  # noqa: F401

    seen: set[tuple[str, str]] = set()
    for method, path, handler in ROUTES:
        if (method, path) in seen or path == "/console/__not_found__":
            continue
        seen.add((method, path))
        app.router.add_route(method, path, handler)
    chatbots.setup_preview(app)
    app.router.add_static("/console/static/", STATIC, name="console_static", append_version=False)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_route("GET", "/console/{tail:.*}", not_found)
    app.router.add_route("GET", "/console", to_console_root)
