"""The cross-tenant matrix, generated from /api/openapi.json: every route x the other tenant's ids x each
role and API-key scope. A new route is covered the day it is added (a route with a body must have a
sample below, or this test fails), and the other tenant's rows must be exactly as they were afterwards."""
from __future__ import annotations

import io
import json
import re
import uuid
import zipfile

import aiohttp
from support.realtime import create_chatbot, widget_session

# A valid body per route, so each request gets past validation to the tenant check. "{x}" is replaced by
# the other tenant's id of that kind. Routes of the caller's own account (sign-up, login, logout, ...) act
# on nothing another tenant owns: they are listed with None and checked only for leaks in what they return.
BODIES: dict[tuple[str, str], dict | None] = {
    ("POST", "/api/auth/signup"): None, ("POST", "/api/auth/login"): None, ("POST", "/api/auth/refresh"): None,
    ("POST", "/api/auth/logout"): None, ("POST", "/api/auth/forgot"): None, ("POST", "/api/auth/reset"): None,
    ("POST", "/api/invites/accept"): None, ("POST", "/api/widget/sessions/refresh"): None,
    ("PUT", "/api/settings"): None, ("POST", "/api/invites"): None, ("POST", "/api/keys"): None,
    ("POST", "/api/chatbots"): None, ("PUT", "/api/assistant/llm"): None,
    ("POST", "/api/billing/checkout"): None, ("POST", "/api/billing/downgrade"): None,
    ("POST", "/api/auth/switch"): {"tenant_id": "{tenant_id}"},
    ("POST", "/api/widget/sessions"): {"chatbot_key": "{chatbot_key}"},
    ("PATCH", "/api/members/{user_id}"): {"role": "admin"},
    ("POST", "/api/conversations/{conversation_id}/assign"): {"user_id": "{user_id}"},
    ("POST", "/api/conversations/{conversation_id}/reply"): {"body": "cross-tenant reply"},
    ("POST", "/api/conversations/{conversation_id}/notes"): {"body": "cross-tenant note"},
    ("POST", "/api/conversations/{conversation_id}/lead"): {"name": "Mallory", "email": "m@example.test"},
    ("PATCH", "/api/chatbots/{chatbot_id}"): {"name": "owned"},
    ("POST", "/api/chatbots/{chatbot_id}/template"): {"template": "support"},  # a key the schema can't know
    ("POST", "/api/leads"): {"chatbot_id": "{chatbot_id}", "name": "Mallory"},
    ("PATCH", "/api/leads/{lead_id}"): {"name": "owned"},
    ("POST", "/api/chatbots/{chatbot_id}/knowledge/sources"): {"kind": "text", "text": "owned", "title": "x"},
    ("PUT", "/api/knowledge/sources/{source_id}/text"): {"text": "owned"},
    ("POST", "/api/chatbots/{chatbot_id}/knowledge/search"): {"query": "secret"},
    ("POST", "/api/feedback/{message_id}/triage"): {"done": True},
    ("POST", "/api/outbox/destinations/{destination_id}/replay"): {"include_failed": True},
    ("POST", "/api/webhooks"): {"url": "https://example.com/hook", "event_kinds": ["closed"],
                                "chatbot_id": "{chatbot_id}"},
    ("PATCH", "/api/webhooks/{endpoint_id}"): {"enabled": False},
    ("POST", "/api/webhooks/{endpoint_id}/rotate-secret"): {"overlap_hours": 0},
    ("POST", "/api/chatbots/{chatbot_id}/alerts"): {"kind": "email", "email": "m@example.test",
                                                     "events": ["lead_captured"]},
    # Staff only (PARLEY_ADMIN_EMAILS): every tenant's member and key is refused.
    ("POST", "/api/staff/tenants/{tenant_id}/plan"): {"plan": "pro"},
    ("POST", "/api/staff/tenants/{tenant_id}/limits"): {"max_chatbots": 0},
    ("POST", "/api/staff/tenants/{tenant_id}/suspend"): {"reason": "cross-tenant"},
    ("POST", "/api/staff/tenants/{tenant_id}/unsuspend"): {"reason": "cross-tenant"},
}
# Query parameters that name an object: the other tenant's id goes there.
QUERY_IDS = {"chatbot": "chatbot_id", "chatbot_id": "chatbot_id", "assignee": "user_id", "actor": "user_id",
             "conversation_id": "conversation_id"}
MARKER = "b-secret-7f3a"
# The other tenant's rows, read back as superuser before and after.
SNAPSHOT = """SELECT (SELECT json_agg(t ORDER BY t.id)::text FROM (SELECT id, name, allowed_origins, config, public_key,
                  deleted_at FROM parley.chatbots WHERE tenant_id = $1) t)
          || (SELECT json_agg(t ORDER BY t.id)::text FROM (SELECT id, status, assignee_id, closed_at
                  FROM parley.conversations WHERE tenant_id = $1) t)
          || (SELECT count(*)::text FROM parley.messages WHERE tenant_id = $1)
          || coalesce((SELECT json_agg(t ORDER BY t.id)::text FROM (SELECT id, name, email, status, custom
                  FROM parley.leads WHERE tenant_id = $1) t), '')
          || (SELECT json_agg(t ORDER BY t.id)::text FROM (SELECT id, title, status FROM parley.knowledge_sources
                  WHERE tenant_id = $1) t)
          || (SELECT json_agg(t ORDER BY t.user_id)::text FROM (SELECT user_id, role FROM parley.members
                  WHERE tenant_id = $1) t)
          || (SELECT json_agg(t ORDER BY t.id)::text FROM (SELECT id, revoked_at FROM parley.api_keys
                  WHERE tenant_id = $1) t)
          || (SELECT json_agg(t ORDER BY t.id)::text FROM (SELECT id, revoked_at, accepted_at FROM parley.invites
                  WHERE tenant_id = $1) t)"""


async def _other_tenant(server, signup, owner_conn) -> dict:
    owner = await signup(server)
    member = await signup(server, join=owner, role="agent")
    token = owner["access_token"]
    bot = await create_chatbot(owner_conn, owner["tenant_id"], name="B bot")
    session = await widget_session(server, bot["key"])
    conv = session["conversation_id"]
    status, msg = await server.call("POST", f"/api/conversations/{conv}/reply", json={"body": MARKER}, token=token)
    assert status == 201, msg
    status, lead = await server.call("POST", "/api/leads", json={"name": MARKER, "email": "b@example.test",
                                                                 "chatbot_id": str(bot["chatbot_id"])}, token=token)
    assert status == 201, lead
    status, source = await server.call("POST", f"/api/chatbots/{bot['chatbot_id']}/knowledge/sources",
                                       json={"kind": "text", "title": MARKER, "text": f"{MARKER} refund policy"},
                                       token=token)
    assert status == 201, source
    status, invite = await server.call("POST", "/api/invites", json={"email": "inv@example.test"}, token=token)
    assert status == 201, invite
    status, key = await server.call("POST", "/api/keys", json={"name": MARKER, "scopes": ["read"]}, token=token)
    assert status == 201, key
    return {"tenant_id": owner["tenant_id"], "chatbot_id": str(bot["chatbot_id"]), "chatbot_key": bot["key"],
            "conversation_id": conv, "message_id": str(msg["id"]), "lead_id": lead["id"], "source_id": source["id"],
            "invite_id": invite["id"], "key_id": key["id"], "user_id": member["user_id"]}


def _resolve(schema: dict, doc: dict) -> dict:
    while "$ref" in schema:
        node = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _instance(schema: dict, doc: dict):
    """A value valid for a JSON schema (required properties only, the simplest valid value each)."""
    schema = _resolve(schema, doc)
    if schema.get("examples"):
        return schema["examples"][0]
    if "example" in schema:
        return schema["example"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(o, doc).get("type") != "null"]
            return _instance(options[0] if options else schema[key][0], doc)
    if "allOf" in schema:
        return _instance(schema["allOf"][0], doc)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: _instance(props[name], doc) for name in schema.get("required", []) if name in props}
    if kind == "array":
        return [_instance(schema.get("items", {}), doc) for _ in range(schema.get("minItems", 0))]
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + (1 if "exclusiveMinimum" in schema else 0))
        return max(low, 1) if schema.get("maximum", 10**9) >= 1 else low
    fmt = schema.get("format")
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "email":
        return "m@example.test"
    if fmt in ("uri", "url"):
        return "https://example.com/x"
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    return "x" * max(1, schema.get("minLength", 1))


def _valid_body(op: dict, doc: dict):
    """A valid JSON body for an operation, made from its OpenAPI request schema."""
    content = op["requestBody"].get("content", {})
    media = content.get("application/json") or next(iter(content.values()), {})
    return _instance(media.get("schema", {}), doc)


def _fill(template, ids: dict):
    """Put the other tenant's ids in; a kind of id it has none of yet gets a made-up one (still must not be 2xx)."""
    if isinstance(template, str):
        return re.sub(r"{(\w+)}", lambda m: ids.get(m.group(1)) or str(uuid.uuid4()), template)
    if isinstance(template, dict):
        return {k: _fill(v, ids) for k, v in template.items()}
    return template


def _readable(body: bytes, content_type: str) -> str:
    """The response as text to look for leaks in; a zip (the GDPR export) is read member by member."""
    if content_type == "application/zip":
        archive = zipfile.ZipFile(io.BytesIO(body))
        return "\n".join(archive.read(name).decode() for name in archive.namelist())
    return body.decode()


async def test_cross_tenant_matrix(server, signup, make_api_key, owner_conn):
    b = await _other_tenant(server, signup, owner_conn)
    a_owner = await signup(server)
    a_admin = await signup(server, join=a_owner, role="admin")
    a_agent = await signup(server, join=a_owner, role="agent")
    creds = {"owner": a_owner["access_token"], "admin": a_admin["access_token"], "agent": a_agent["access_token"]}
    for scopes in (("read",), ("write",), ("read", "write")):
        creds["key:" + "+".join(scopes)] = await make_api_key(server, a_owner["access_token"], scopes)
    before = await owner_conn.fetchval(SNAPSHOT, uuid.UUID(b["tenant_id"]))
    secrets = [b[k] for k in ("conversation_id", "lead_id", "source_id", "invite_id", "key_id", "chatbot_key")] + [MARKER]

    status, doc = await server.call("GET", "/api/openapi.json")
    assert status == 200
    # A route naming an object in its path gets a valid body (its sample below, else an instance made
    # from its OpenAPI schema), so the tenant check answers (401/403/404/409), never validation (422).
    # Routes without ids in the path act on the caller's own account or tenant: without a sample they
    # are only read for leaks (GET) or skipped.
    calls = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            method = method.upper()
            has_ids = "{" in path
            body = BODIES.get((method, path))
            if body is None and has_ids and "requestBody" in op:
                body = _valid_body(op, doc)  # so the tenant check, not validation, answers
            if method != "GET" and not has_ids and body is None:
                continue  # acts on the caller's own account or tenant only
            if path == "/api/events":
                continue  # a stream; covered by the realtime isolation tests
            url = _fill(path, b)
            query = {p["name"]: b[QUERY_IDS[p["name"]]] for p in op.get("parameters", [])
                     if p["in"] == "query" and p["name"] in QUERY_IDS}
            for who, token in creds.items():
                headers = {"Authorization": f"Bearer {token}"}
                kwargs: dict = {"params": query, "headers": headers}
                if path.endswith("/knowledge/upload"):
                    form = aiohttp.FormData()
                    form.add_field("file", b"owned", filename="x.txt", content_type="text/plain")
                    kwargs["data"] = form
                elif body is not None:
                    kwargs["json"] = _fill(body, b)
                async with server.http.request(method, server.base_url + url, **kwargs) as resp:
                    text = _readable(await resp.read(), resp.content_type)
                    status = resp.status
                calls += 1
                where = f"{method} {url} as {who}"
                assert status < 500, (where, status, text[:300])
                leaked = [s for s in secrets if s in text]
                assert not leaked, (where, status, leaked, text[:300])
                if has_ids or (method != "GET" and body is not None and "{" in json.dumps(BODIES.get((method, path)))):
                    assert status in (401, 403, 404, 409, 422) or (method == "GET" and status == 200), \
                        (where, status, text[:300])
                    if status >= 400:
                        err = json.loads(text)["error"]
                        assert err["code"] and err["message"], (where, text)
                    if has_ids and method == "GET":
                        assert status in (401, 403, 404), (where, status, text[:300])
                    if has_ids and method != "GET" and not path.endswith("/knowledge/upload"):
                        assert status != 422, ("validation answered before the tenant check", where, text[:300])
                if status >= 400 and resp.content_type == "application/json":
                    assert isinstance(json.loads(text).get("error"), dict), (where, text[:300])
    assert calls > 250
    after = await owner_conn.fetchval(SNAPSHOT, uuid.UUID(b["tenant_id"]))
    assert after == before, "the other tenant's rows changed"
