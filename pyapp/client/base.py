"""The HTTP side of the Python client: one aiohttp session, a bearer token, JSON in and out, and
every error response raised as ParleyError carrying the API's `code`, status and details.
Imports nothing from the server (only aiohttp), so integrators can use it on its own."""

from __future__ import annotations

import functools
import inspect
import keyword
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, cast
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


def wire_name(name: str) -> str:
    """A parameter's name on the wire (the client spells a Python keyword with a trailing `_`: `from_`)."""
    bare = name.removesuffix("_")
    return bare if name != bare and keyword.iskeyword(bare) else name


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


Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


def operations(table: dict[str, tuple[str, str]]) -> Callable[[Method], Method]:
    """The decorator that makes a typed signature a call of the route `table` names it after:
    `(method, path)` by operationId. The signature's positional parameters fill the path's
    `{placeholders}` (each escaped to one segment), `body` is the JSON body, `headers` extra
    headers, and every other keyword a query parameter (None: left out)."""

    def operation(signature: Method) -> Method:
        method, path = table[signature.__name__]
        params = inspect.signature(signature)
        in_path = [p.name for p in params.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]

        @functools.wraps(signature)
        async def call(self: ClientBase, *args: Any, **kwargs: Any) -> Any:
            bound = params.bind(self, *args, **kwargs)
            bound.apply_defaults()
            values = {name: value for name, value in bound.arguments.items() if name != "self"}
            url = path.format_map({name: segment(values.pop(name)) for name in in_path})
            body, headers = values.pop("body", None), values.pop("headers", None)
            query = {wire_name(name): value for name, value in values.items()}
            return await self.request(method, url, body=body, query=query, headers=headers)

        call.__doc__ = f"{method} {path} {signature.__doc__ or ''}".rstrip()
        return cast(Method, call)

    return operation
