"""Route declarations: one decorator gives validation, auth, the tenant transaction and OpenAPI.

Handlers stay thin: they receive a `Call` with the validated body/query and open the
tenant transaction with `call.tx()`; the pydantic models double as the OpenAPI schemas.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from pyapp.auth import Credential, bearer_token, no_tenant, resolve_member, resolve_user
from pyapp.context import POOL, REQUEST_ID, SESSION_TOKEN, SETTINGS, client_ip, json_dumps
from pyapp.db import Actor, tenant_tx
from pyapp.errors import ApiError
from pyapp.inputs import INT64_MAX, MALFORMED_BODY, check_value, parse_json


@dataclass
class RouteSpec:
    method: str
    path: str
    handler: Callable[[Call], Awaitable[Any]]
    auth: str
    min_role: str
    keys: bool
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any
    status: int
    summary: str
    tags: tuple[str, ...]
    media: str = "application/json"  # what a success answers with (text/event-stream, text/csv)


@dataclass
class Call:
    """What a handler gets: the request, validated input, and the authenticated actor."""

    request: web.Request
    body: Any = None
    query: Any = None
    actor: Actor | None = None
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    scopes: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def member(self) -> Actor:
        """The actor of a route that requires a workspace member (auth guarantees one)."""
        if self.actor is None:
            raise no_tenant()
        return self.actor

    @property
    def pool(self):
        return self.request.app[POOL]

    @property
    def settings(self):
        return self.request.app[SETTINGS]

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    def uuid_param(self, name: str) -> uuid.UUID:
        try:
            return uuid.UUID(self.request.match_info[name])
        except ValueError:
            raise ApiError(404, "not_found", f"No such {name.removesuffix('_id')}.") from None

    def int_param(self, name: str, what: str) -> int:
        """A positive bigint id from the path; anything else (or past int64) is 404, not a database error."""
        raw = self.request.match_info[name]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) <= INT64_MAX:
            raise ApiError(404, "not_found", f"No such {what}.")
        return int(raw)

    async def multipart(self):
        """The multipart reader; a body that is not multipart, or has no boundary, is 415/400, not a 500."""
        if not self.request.content_type.startswith("multipart/"):
            raise ApiError(415, "multipart_required", "Upload the file as multipart/form-data.")
        try:
            return await self.request.multipart()
        except MALFORMED_BODY:  # aiohttp: "boundary missed", malformed Content-Type
            raise ApiError(400, "invalid_multipart", "The multipart body has no valid boundary.") from None

    def tx(self):
        if self.actor is None:
            raise ApiError(401, "unauthenticated", "Sign in first.")
        return tenant_tx(self.pool, self.actor)


async def _resolve_public(request: web.Request, spec: RouteSpec, call: Call) -> None:
    return None


def _credential_of(request: web.Request) -> str | None:
    return bearer_token(request) or request.get(SESSION_TOKEN)


async def _resolve_user(request: web.Request, spec: RouteSpec, call: Call) -> None:
    """A signed-in person (JWT); tenant optional. Session liveness is checked by SQL."""
    _apply(
        call,
        resolve_user(
            request.app,
            _credential_of(request),
            min_role=spec.min_role,
            ip=client_ip(request),
            request_id=request.get(REQUEST_ID),
        ),
    )


async def _resolve_member(request: web.Request, spec: RouteSpec, call: Call) -> None:
    """A member of a tenant: a user JWT carrying a tenant, or a tenant API key (read scope for GET/HEAD)."""
    _apply(
        call,
        await resolve_member(
            request.app,
            _credential_of(request),
            scope="read" if spec.method in ("GET", "HEAD") else "write",
            min_role=spec.min_role,
            keys=spec.keys,
            ip=client_ip(request),
            request_id=request.get(REQUEST_ID),
        ),
    )


def _apply(call: Call, credential: Credential) -> None:
    call.actor = credential.actor
    call.user_id = credential.user_id
    call.session_id = credential.session_id
    call.scopes = credential.scopes


AUTH_RESOLVERS: dict[str, Callable[[web.Request, RouteSpec, Call], Awaitable[None]]] = {
    "public": _resolve_public,
    "user": _resolve_user,
    "member": _resolve_member,
}


def _validation_error(exc: ValidationError) -> ApiError:
    fields = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()]
    return ApiError(422, "validation_failed", "Some fields are not valid.", {"fields": fields})


class Api:
    """The registry every surface declares its routes in."""

    def __init__(self) -> None:
        self.routes: list[RouteSpec] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        auth: str = "member",
        min_role: str = "agent",
        keys: bool = True,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        summary: str = "",
        tags: tuple[str, ...] = (),
        media: str = "application/json",
    ):
        def deco(fn):
            self.routes.append(
                RouteSpec(
                    method.upper(),
                    path,
                    fn,
                    auth,
                    min_role,
                    keys,
                    body,
                    query,
                    response,
                    status,
                    summary or (fn.__doc__ or "").strip().split("\n")[0],
                    tags,
                    media,
                )
            )
            return fn

        return deco

    def group(self, prefix: str = "", **shared: Any) -> Callable[..., Callable]:
        """A surface's route decorator: ``route``'s options its routes all share (tags, auth, min_role,
        keys) and the start of their paths stated once; each route gives the rest."""

        def route(method: str, path: str, **options: Any):
            return self.route(method, prefix + path, **shared, **options)

        return route

    def install(self, app: web.Application) -> None:
        for spec in self.routes:
            app.router.add_route(spec.method, spec.path, self._wrap(spec))

    def _wrap(self, spec: RouteSpec):
        resolver = AUTH_RESOLVERS[spec.auth]

        async def handler(request: web.Request) -> web.StreamResponse:
            call = Call(request=request)
            await resolver(request, spec, call)
            if spec.body is not None:
                data = parse_json(await request.read(), empty={})  # no body: report the missing fields
                try:
                    call.body = spec.body.model_validate(data)
                except ValidationError as exc:
                    raise _validation_error(exc) from None
            if spec.query is not None:
                try:
                    call.query = spec.query.model_validate(dict(request.query))
                except ValidationError as exc:
                    raise _validation_error(exc) from None
                check_value(call.query.model_dump())  # e.g. an id past int64 reaching a bigint parameter
            result = await spec.handler(call)
            if isinstance(result, web.StreamResponse):
                return result
            if result is None and spec.status == 204:
                return web.Response(status=204)
            return web.json_response(result, status=spec.status, dumps=json_dumps)

        handler.__name__ = spec.handler.__name__
        return handler

    def openapi(self, *, title: str = "Parley API", version: str = "1") -> dict:
        components: dict[str, Any] = {}
        paths: dict[str, Any] = {}

        def schema_of(tp: Any) -> dict:
            schema = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                components[name] = sub
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                components[tp.__name__] = schema
                return {"$ref": f"#/components/schemas/{tp.__name__}"}
            return schema

        taken: set[str] = set()
        for spec in self.routes:
            op: dict[str, Any] = {
                "summary": spec.summary,
                "operationId": _operation_id(spec, taken),
                "tags": list(spec.tags) or [spec.path.split("/")[2] if spec.path.count("/") > 1 else "root"],
            }
            params = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in re.findall(r"{(\w+)}", spec.path)
            ]
            if spec.query is not None:
                qschema = spec.query.model_json_schema()
                for name, prop in qschema.get("properties", {}).items():
                    params.append(
                        {"name": name, "in": "query", "required": name in qschema.get("required", []), "schema": prop}
                    )
            if params:
                op["parameters"] = params
            if spec.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema_of(spec.body)}},
                }
            responses: dict[str, Any] = {}
            if spec.status == 204:
                responses["204"] = {"description": "No content"}
            else:
                if spec.media != "application/json":  # a stream or a file: text, not a JSON document
                    content = {spec.media: {"schema": {"type": "string"}}}
                elif spec.response is not None:
                    content = {"application/json": {"schema": schema_of(spec.response)}}
                else:
                    content = {}
                responses[str(spec.status)] = {"description": "OK", **({"content": content} if content else {})}
            responses["default"] = {
                "description": "Error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            op["responses"] = responses
            if spec.auth != "public":
                op["security"] = [{"bearer": []}]
            paths.setdefault(spec.path, {})[spec.method.lower()] = op
        components["Error"] = {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        }
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version},
            "paths": paths,
            "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        }


def _operation_id(spec: RouteSpec, taken: set[str]) -> str:
    """The handler's name; a name another surface took first is prefixed with its own package
    (`pyapp.gdpr.routes.delete_tenant` → `gdpr_delete_tenant`), so ids stay unique and stable (the
    Python client's methods are named by them)."""
    name = spec.handler.__name__
    if name in taken:
        package = [p for p in spec.handler.__module__.split(".")[1:] if p != "routes"]
        name = "_".join([*package, name])
    taken.add(name)
    return name


def row(record) -> dict | None:
    return dict(record) if record is not None else None


def rows(records) -> list[dict]:
    return [dict(r) for r in records]


api = Api()
