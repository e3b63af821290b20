"""The API for integrators: the reference page (/api/docs) is rendered from /api/openapi.json with
nothing from outside, and the Python client (pyapp/client) has exactly one method per OpenAPI
operation, is up to date with the generator, and raises ParleyError with the API's code."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
import uuid

import pytest
from pyapp.client import OPERATIONS, ParleyClient, ParleyError
from pyapp.client.operations import Operations
from support.accounts import TEST_PASSWORD
from support.knowledge import ROOT


async def _openapi(server) -> dict:
    status, doc = await server.call("GET", "/api/openapi.json")
    assert status == 200
    return doc


async def test_every_operation_has_one_client_method_and_back(server):
    doc = await _openapi(server)
    served = {op["operationId"]: (method.upper(), path)
              for path, methods in doc["paths"].items() for method, op in methods.items()}
    assert len(served) == sum(len(m) for m in doc["paths"].values()), "operationIds must be unique"
    assert {name: (op.method, op.path) for name, op in OPERATIONS.items()} == served
    methods = {name for name, fn in inspect.getmembers(Operations, inspect.iscoroutinefunction)
               if name in Operations.__dict__}
    assert methods == set(served)
    # Each method's path parameters, in the order the path names them.
    for name, (_method, path) in served.items():
        params = [p for p in inspect.signature(getattr(Operations, name)).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]
        assert [p.name for p in params] == re.findall(r"{(\w+)}", path), name


def test_the_generated_client_is_current():
    out = subprocess.run([sys.executable, "scripts/gen_client.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


async def test_the_client_against_the_server(server, signup):
    owner = await signup(server)
    client = server.client(owner["access_token"])
    me = await client.get_me()
    assert me["user"]["email"] == owner["email"]
    # Query parameters (a bool, an int, a keyword name) reach the route's validation.
    page = await client.list_conversations(status="closed", limit=5)
    assert isinstance(page, (list, dict))
    with pytest.raises(ParleyError) as err:
        await client.list_conversations(limit=100_000)
    assert err.value.status == 422 and err.value.code == "validation_failed" and err.value.details["fields"]
    # A keyword spelled with a trailing _ (from_) goes out under its API name (from).
    with pytest.raises(ParleyError) as err:
        await client.usage(from_="not-a-date")
    assert err.value.status == 422 and "from" in str(err.value.details), err.value.details
    with pytest.raises(TypeError):
        await client.get_conversation()  # a path parameter is required, as in any Python call
    # Errors carry the API's code and status.
    with pytest.raises(ParleyError) as err:
        await server.client().get_me()
    assert err.value.status == 401 and err.value.code == "unauthenticated"
    with pytest.raises(ParleyError) as err:
        await client.get_conversation(str(uuid.uuid4()))
    assert (err.value.status, err.value.code) == (404, "not_found")
    # A path parameter is one segment: a '/' in it cannot reach another route.
    with pytest.raises(ParleyError) as err:
        await client.get_conversation("../keys")
    assert err.value.status == 404
    # A client of its own (its own session), signing in like an integrator would.
    async with ParleyClient(server.base_url) as fresh:
        auth = await fresh.log_in(body={"email": owner["email"], "password": TEST_PASSWORD})
        assert (await fresh.with_token(auth["access_token"]).get_me())["user"]["email"] == owner["email"]


async def test_the_reference_page(server):
    doc = await _openapi(server)
    async with server.http.get(server.base_url + "/api/docs") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        html = await resp.text()
    assert "default-src 'none'" in csp and "script-src" not in csp
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            anchor = f'id="op-{op["operationId"]}"'
            assert anchor in html, anchor
            section = html[html.index(anchor):]
            assert path in section[:2000] and method.upper() in section[:600]
            assert f"client.{op['operationId']}(" in section[:8000]
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    # Every in-page link lands on an anchor of the page.
    anchors = set(re.findall(r'id="([^"]+)"', html))
    assert {target for target in re.findall(r'href="#([^"]+)"', html)} <= anchors
    # Nothing from outside: no script, no external stylesheet, image, font or frame.
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(", html)
    assert "database_unavailable" in html and "Retry-After" in html
