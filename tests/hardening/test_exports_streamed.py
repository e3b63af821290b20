"""CSV exports are streamed from a server-side cursor (issue 17, finding 9): chunked transfer, one
HTTP chunk per cursor fetch, every row once, and refusals still answered in the error shape."""
import csv
import io
import uuid
from typing import Any

from pyapp import csv_export

LEADS = 530


async def _chunks(server, path: str, token: str) -> tuple[int, Any, bytes, int]:
    async with server.http.get(server.base_url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
        body, chunks = b"", 0
        async for data, end_of_chunk in resp.content.iter_chunks():
            body += data
            chunks += end_of_chunk
        return resp.status, resp.headers.copy(), body, chunks


async def test_leads_csv_streams_in_cursor_chunks(server, tenant, owner_conn, monkeypatch):
    monkeypatch.setattr(csv_export, "CHUNK_ROWS", 50)
    tenant_id = uuid.UUID(tenant["tenant_id"])
    await owner_conn.execute(
        "INSERT INTO parley.leads (tenant_id, name, email, created_at)"
        " SELECT $1, 'Lead ' || g, 'lead' || g || '@example.test', now() - g * interval '1 minute'"
        " FROM generate_series(1, $2::int) g", tenant_id, LEADS)
    status, headers, body, chunks = await _chunks(server, "/api/leads.csv", tenant["access_token"])
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in headers
    assert headers.get("X-Request-Id")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["name"] for r in rows] == [f"Lead {g}" for g in range(1, LEADS + 1)]  # newest first, each once
    # One write per fetch of 50 rows (the first with the header), then the end.
    assert chunks >= LEADS // 50

    # No row: the header alone.
    monkeypatch.setattr(csv_export, "CHUNK_ROWS", 1000)
    status, _, body, _ = await _chunks(server, "/api/leads.csv?status=won", tenant["access_token"])
    assert status == 200 and body.decode().splitlines() == [
        "id,created_at,status,name,email,phone,chatbot_id,chatbot,conversation_id,custom"]

    # Refused before the first byte: the error shape, not a broken download.
    async with server.http.get(server.base_url + "/api/leads.csv",
                               headers={"Authorization": "Bearer not-a-token"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"]
    async with server.http.get(server.base_url + "/api/leads.csv?status=nope",
                               headers={"Authorization": f"Bearer {tenant['access_token']}"}) as resp:
        assert resp.status == 422 and (await resp.json())["error"]["code"]


async def test_a_download_abandoned_midway_ends_quietly(server, tenant, owner_conn, monkeypatch, caplog):
    monkeypatch.setattr(csv_export, "CHUNK_ROWS", 20)
    tenant_id = uuid.UUID(tenant["tenant_id"])
    await owner_conn.execute(
        "INSERT INTO parley.leads (tenant_id, name, email) SELECT $1, 'Lead ' || g, 'l' || g || '@example.test'"
        " FROM generate_series(1, 3000) g", tenant_id)
    async with server.http.get(server.base_url + "/api/leads.csv",
                               headers={"Authorization": f"Bearer {tenant['access_token']}"}) as resp:
        assert resp.status == 200
        await resp.content.readany()
        resp.connection.transport.abort()  # the client goes away mid-download
    # The server carries on: the next download is whole, and nothing was logged as an error.
    status, _, body, _ = await _chunks(server, "/api/leads.csv", tenant["access_token"])
    assert status == 200 and body.decode().count("\r\n") == 3001
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
