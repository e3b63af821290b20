"""The operator console at /console/: server-rendered pages (jinja2, autoescape on) over the same SQL.

`setup(app)` registers the page routes and the console's static files. Sign-in sets an
HttpOnly cookie scoped to /console holding the session; /api stays bearer-only.
"""
from __future__ import annotations

from aiohttp import web

from pyapp.console.web import ROUTES, STATIC


def setup(app: web.Application) -> None:
    # Importing the page modules declares their routes on ROUTES.
    from pyapp.console import (  # noqa: F401
        analytics,
        auth,
        chatbots,
        inbox,
        knowledge,
        leads,
        onboarding,
        team,
    )

    seen: set[tuple[str, str]] = set()
    for method, path, handler in ROUTES:
        if (method, path) in seen:
            continue
        seen.add((method, path))
        app.router.add_route(method, path, handler)
    chatbots.setup_preview(app)
    app.router.add_static("/console/static/", STATIC, name="console_static", append_version=False)
