"""The HTTP side of the Python client: one aiohttp session, a bearer token, JSON in and out, and
every error response raised as ParleyError carrying the API's `code`, status and details.
Imports nothing from the server (only aiohttp), so integrators can use it on its own."""

from __future__ import annotations

import inspect
import keyword
import re
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, NamedTuple, TypeVar
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


class Operation(NamedTuple):
    """One route as the client calls it: HTTP method, path (its {placeholders} are the method's
    positional parameters), summary, whether it takes a JSON `body`, and its query parameters
    (Python name: type name), each an optional keyword."""

    method: str
    path: str
    doc: str
    body: bool = False
    query: dict[str, str] | None = None


def with_operations(table: dict[str, Operation]) -> Callable[[type[Client]], type[Client]]:
    """A class decorator: one method per row of `table`, named by the row's key."""

    def attach(cls: type[Client]) -> type[Client]:
        for name, op in table.items():
            method = _method(op)
            method.__name__, method.__qualname__, method.__module__ = name, f"{cls.__qualname__}.{name}", cls.__module__
            setattr(cls, name, method)
        return cls

    return attach


def _method(op: Operation) -> Callable[..., Awaitable[Any]]:
    """The coroutine method that calls `op`, with the signature its row describes: path parameters
    (each escaped to one segment), then keywords only: `body`, the query parameters (None: left
    out), `headers`."""
    in_path = re.findall(r"{(\w+)}", op.path)
    param = inspect.Parameter
    params = [param("self", param.POSITIONAL_OR_KEYWORD)]
    params += [param(name, param.POSITIONAL_OR_KEYWORD, annotation="Any") for name in in_path]
    if op.body:
        params.append(param("body", param.KEYWORD_ONLY, annotation="dict[str, Any]"))
    params += [
        param(name, param.KEYWORD_ONLY, default=None, annotation=f"{kind} | None")
        for name, kind in (op.query or {}).items()
    ]
    params.append(param("headers", param.KEYWORD_ONLY, default=None, annotation="dict[str, str] | None"))
    signature = inspect.Signature(params, return_annotation="Any")

    async def call(self: ClientBase, *args: Any, **kwargs: Any) -> Any:
        values = signature.bind(self, *args, **kwargs).arguments
        del values["self"]
        url = op.path.format_map({name: segment(values.pop(name)) for name in in_path})
        body, headers = values.pop("body", None), values.pop("headers", None)
        query = {wire_name(name): value for name, value in values.items()}
        return await self.request(op.method, url, body=body, query=query, headers=headers)

    call.__doc__ = f"{op.method} {op.path} {op.doc}"
    setattr(call, "__signature__", signature)  # noqa: B010 (what inspect and help() read)
    return call


Client = TypeVar("Client", bound=ClientBase)
