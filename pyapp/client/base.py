"""The HTTP side of the Python client: one aiohttp session, a bearer token, JSON in and out, and
every error response raised as ParleyError carrying the API's `code`, status and details.
Imports nothing from the server (only aiohttp), so integrators can use it on its own."""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp


class ParleyError(Exception):
    """An error answer from Parley: HTTP `status`, the stable `code` ({"error": {"code", ...}}),
    its `message` and `details`, and `retry_after` (seconds) when the server sent Retry-After."""

    def __init__(
        self, status: int, code: str, message: str, details: dict | None = None, retry_after: str | None = None
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None


def segment(value: Any) -> str:
    """A path parameter, escaped (a `/` or `?` in an id cannot reach another route)."""
    return quote(str(value), safe="")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ClientBase:
    """`base_url` (e.g. http://127.0.0.1:8080), an optional bearer `token` (a user's access token or
    an API key); pass your own aiohttp `session` or let the client own one (close it with
    `await client.aclose()` or `async with`)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.headers = dict(headers or {})
        self._session = session
        self._owned = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def with_token(self, token: str | None) -> ClientBase:
        """The same client (sharing its session) acting with another token."""
        other = type(self)(self.base_url, token, session=self.session, headers=self.headers)
        other._owned = False
        return other

    async def aclose(self) -> None:
        """Close the session if the client opened it (`close` is the route that closes a conversation)."""
        if self._owned and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> ClientBase:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call one route: the parsed JSON answer (text for other types, None for 204), or ParleyError."""
        hdrs = {**self.headers, **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        async with self.session.request(
            method, self.base_url + path, json=body, params=params or None, headers=hdrs
        ) as resp:
            if resp.status == 204:
                return None
            data: Any = await resp.json() if resp.content_type == "application/json" else await resp.text()
            if resp.status >= 400:
                err = data.get("error") if isinstance(data, dict) else None
                if not isinstance(err, dict):
                    err = {"code": "http_error", "message": str(data)[:200]}
                raise ParleyError(
                    resp.status,
                    str(err.get("code")),
                    str(err.get("message")),
                    err.get("details"),
                    resp.headers.get("Retry-After"),
                )
            return data
