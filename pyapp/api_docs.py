"""GET /api/docs: the API reference, rendered on the server with jinja2 from the same OpenAPI
document as /api/openapi.json (so it cannot drift), with no outside assets: one HTML page, its
CSS inline, no script. Each operation shows its auth, parameters, body fields, answer, the error
shape and the Python client's method for it (pyapp/client)."""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pyapp.api import api

TEMPLATES = Path(__file__).parent / "templates" / "api"
ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def type_of(schema: dict[str, Any]) -> str:
    """A schema in words: `string (uuid)`, `list of Message`, `integer 1–500`, `one of: a, b`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        parts = [type_of(s) for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = any(s.get("type") == "null" for s in schema["anyOf"])
        return " or ".join(parts) + (" or null" if nullable else "")
    if "enum" in schema:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return f"“{schema['const']}”"
    kind = schema.get("type", "any")
    if kind == "array":
        return "list of " + type_of(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return "object of " + type_of(schema["additionalProperties"])
    text = str(kind)
    if schema.get("format"):
        text += f" ({schema['format']})"
    low, high = schema.get("minimum", schema.get("minLength")), schema.get("maximum", schema.get("maxLength"))
    if low is not None or high is not None:
        unit = " chars" if "minLength" in schema or "maxLength" in schema else ""
        text += f" {'' if low is None else low}–{'' if high is None else high}{unit}"
    return text


def fields_of(schema: dict[str, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    """An object schema's (or a referenced component's) properties as rows."""
    if "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "type": type_of(prop),
            "required": name in required,
            "default": prop.get("default"),
            "description": prop.get("description", ""),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def ref_of(schema: dict[str, Any] | None) -> str | None:
    """The component a schema names (directly or as a list's items), for a link; else None."""
    if not schema:
        return None
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return ref_of(schema.get("items"))
    return None


def python_name(name: str) -> str:
    """A parameter name as the Python client spells it (`from` → `from_`)."""
    name = re.sub(r"\W", "_", name)
    return name + "_" if keyword.iskeyword(name) else name


def describe(doc: dict[str, Any]) -> dict[str, Any]:
    """The document arranged for the page: operations grouped by tag, schemas by name."""
    components = doc.get("components", {}).get("schemas", {})
    tags: dict[str, list[dict[str, Any]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters", [])
            path_params = [p["name"] for p in params if p["in"] == "path"]
            query = [
                {
                    "name": p["name"],
                    "type": type_of(p["schema"]),
                    "required": p.get("required", False),
                    "default": p["schema"].get("default"),
                }
                for p in params
                if p["in"] == "query"
            ]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            answer: dict[str, Any] = {}
            status = "200"
            for code, response in op["responses"].items():
                if code != "default":
                    status, answer = code, response
                    break
            answer_schema = (answer.get("content") or {}).get("application/json", {}).get("schema")
            args = [python_name(p) for p in path_params] + (["body={…}"] if body else [])
            args += [f"{python_name(q['name'])}=…" for q in query if q["required"]]
            tags.setdefault((op.get("tags") or ["other"])[0], []).append(
                {
                    "id": op["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "auth": "security" in op,
                    "path_params": path_params,
                    "query": query,
                    "body": fields_of(body, components) if body else None,
                    "body_type": type_of(body) if body else None,
                    "body_ref": ref_of(body),
                    "status": status,
                    "answer": type_of(answer_schema) if answer_schema else None,
                    "answer_ref": ref_of(answer_schema),
                    "client": f"await client.{op['operationId']}({', '.join(args)})",
                }
            )
    schemas = [
        {"name": name, "fields": fields_of(schema, components), "type": type_of(schema)}
        for name, schema in sorted(components.items())
    ]
    return {
        "title": doc["info"]["title"],
        "version": doc["info"]["version"],
        "tags": sorted(tags.items()),
        "schemas": schemas,
        "count": sum(len(ops) for ops in tags.values()),
    }


async def api_docs(request: web.Request) -> web.Response:
    html = ENV.get_template("reference.html").render(**describe(api.openapi()))
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/docs", api_docs)
