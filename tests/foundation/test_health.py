async def test_healthz_and_readyz(server):
    status, body = await server.call("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, body = await server.call("GET", "/readyz")
    assert status == 200, body
    assert body["checks"]["schema"]["ok"] is True


async def test_readyz_503_when_schema_behind(server, owner_conn):
    await owner_conn.execute("UPDATE parley_migrations.schema_state SET fingerprint = 'old'")
    status, body = await server.call("GET", "/readyz")
    assert status == 503
    assert body["checks"]["schema"] == {"ok": False, "message": "database schema is behind the code: run `parley migrate`"}


async def test_unknown_route_uses_error_shape(server):
    status, body = await server.call("GET", "/api/nope")
    assert status == 404
    assert body["error"]["code"] == "not_found"


async def test_openapi_document(server):
    status, body = await server.call("GET", "/api/openapi.json")
    assert status == 200
    assert body["openapi"].startswith("3.")


async def test_openapi_names_what_streams_and_files_answer_with(server):
    """A client generator or a fuzzer must know that the event stream never ends and the CSV export is
    not JSON: the document says so per route; JSON routes keep their schema."""
    _status, body = await server.call("GET", "/api/openapi.json")
    ok = {path: body["paths"][path]["get"]["responses"]["200"] for path in ("/api/events", "/api/leads.csv")}
    assert list(ok["/api/events"]["content"]) == ["text/event-stream"]
    assert list(ok["/api/leads.csv"]["content"]) == ["text/csv"]
    assert list(body["paths"]["/api/me"]["get"]["responses"]["200"]["content"]) == ["application/json"]
