"""Run another surface's handler for a console page, as the signed-in member.

The JSON API's handlers are plain `async def handler(call: Call)`; the console builds the
`Call` (actor from the cookie session, validated body/query) and calls them, so a rule or a
side effect (hashing, mail, background import) is implemented once. The route's minimum
role is carried by the actor, and parley.begin_request enforces it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from pyapp.api import Call
from pyapp.console.accounts_bridge import _call
from pyapp.console.web import Ctx


class ContinuedRequest:
    """The request with a multipart reader already past the CSRF part (for streamed uploads)."""

    def __init__(self, request: web.Request, reader) -> None:
        self._request = request
        self._reader = reader

    async def multipart(self):
        return self._reader

    def __getattr__(self, name: str):
        return getattr(self._request, name)

    def __getitem__(self, key):
        return self._request[key]

    def get(self, key, default=None):
        return self._request.get(key, default)


async def call(
    ctx: Ctx, handler: Callable[[Call], Awaitable[Any]], *, body=None, query=None, min_role: str = "agent"
) -> Any:
    request = ctx.request
    if ctx.multipart is not None:
        # A proxy with the request's whole interface (every attribute but multipart() is the
        # request's own), so the handler reads it as the request it stands for.
        request = cast(web.Request, ContinuedRequest(ctx.request, ctx.multipart))
    c = _call(ctx.request, body, session=ctx.session, min_role=min_role, query=query)
    c.request = request
    return await handler(c)
