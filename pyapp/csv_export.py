"""CSV downloads streamed from a server-side cursor: rows go out in chunks as PostgreSQL returns
them, so an export's memory does not grow with its size and its first bytes leave at once.

The caller opens the tenant transaction (a cursor lives in one) and builds the response with
`csv_response` (its own headers and cookies go on before the first byte); `stream_csv` reads the
first chunk before sending anything, so a refusal from SQL is still a proper error response.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from pyapp.context import REQUEST_ID

CHUNK_ROWS = 1000  # rows per cursor fetch and per write

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not execute: text starting like a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_response(filename: str, headers: dict[str, str] | None = None) -> web.StreamResponse:
    """A chunked text/csv download named `filename` (not yet sent: add headers or cookies first)."""
    response = web.StreamResponse(
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **(headers or {})}
    )
    response.content_type = "text/csv"
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    return response


async def stream_csv(
    request: web.Request,
    response: web.StreamResponse,
    conn: asyncpg.Connection,
    query: str,
    *args: Any,
    columns: Sequence[str],
    cell: Callable[[Any], str] = csv_cell,
    bom: bool = False,
) -> web.StreamResponse:
    """Send `query`'s rows (inside `conn`'s open transaction) as CSV on `response`: a header row
    (the query's columns, or `columns` when there is no row), then the rows CHUNK_ROWS at a time.
    A BOM tells spreadsheet programs the file is UTF-8."""
    cursor = await conn.cursor(query, *args)
    batch = await cursor.fetch(CHUNK_ROWS)
    names = list(batch[0].keys()) if batch else list(columns)
    if REQUEST_ID in request and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    await response.prepare(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if bom:
        out.write("\ufeff")
    writer.writerow(names)
    try:
        while True:
            for r in batch:
                writer.writerow([cell(r[c]) for c in names])
            await response.write(out.getvalue().encode("utf-8"))
            out.seek(0)
            out.truncate()
            if len(batch) < CHUNK_ROWS:
                break
            batch = await cursor.fetch(CHUNK_ROWS)
        await response.write_eof()
    except ConnectionResetError:  # the client went away: nothing to answer, the transaction just ends
        pass
    return response
