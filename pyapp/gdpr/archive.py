"""The export archive: a zip of CSV files (conversations, messages, leads, feedback, knowledge
sources, audit) and a manifest, produced in chunks from server-side cursors so a large tenant's
export never sits in memory. Used by the API, the console and `parley gdpr export`.

`begin_export` runs first (role check, scope, audit: an error there is still a proper response),
then `archive_chunks` yields the zip's bytes as they are made. Both run in one tenant transaction.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from pyapp.csv_export import CHUNK_ROWS, csv_cell

# (file, function, which ids of the scope it takes: "conversation_ids" | "lead_ids" | None = tenant only)
DATASETS: tuple[tuple[str, str, str | None], ...] = (
    ("conversations.csv", "parley.gdpr_export_conversations", "conversation_ids"),
    ("messages.csv", "parley.gdpr_export_messages", "conversation_ids"),
    ("leads.csv", "parley.gdpr_export_leads", "lead_ids"),
    ("feedback.csv", "parley.gdpr_export_feedback", "conversation_ids"),
    ("knowledge_sources.csv", "parley.gdpr_export_knowledge_sources", None),
    ("audit.csv", "parley.gdpr_export_audit", None),
)


async def begin_export(conn: asyncpg.Connection, conversation_id: uuid.UUID | None, email: str | None) -> dict:
    """The export's scope ({scope: tenant|visitor, conversation_ids, lead_ids}); SQL checks the role and audits."""
    return await conn.fetchval("SELECT parley.begin_gdpr_export($1, $2)", conversation_id, email)


class _Sink:
    """A write-only file for zipfile that hands out what was written so far (no seeking: the zip
    uses data descriptors)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes, /) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


async def archive_chunks(conn: asyncpg.Connection, scope: dict) -> AsyncIterator[bytes]:
    """The zip's bytes, chunk by chunk, for `scope` (from begin_export), inside `conn`'s transaction."""
    sink = _Sink()
    counts: dict[str, int] = {}
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, function, ids in DATASETS:
            if ids is None and scope["scope"] != "tenant":
                continue
            args = () if ids is None else (_uuids(scope[ids]),)
            placeholders = ", ".join(f"${i + 1}" for i in range(len(args)))
            statement = await conn.prepare(f"SELECT * FROM {function}({placeholders})")
            columns = [a.name for a in statement.get_attributes()]
            counts[name] = 0
            with archive.open(name, "w", force_zip64=True) as member:
                text = io.StringIO()
                writer = csv.writer(text, lineterminator="\r\n")
                writer.writerow(columns)
                cursor = await statement.cursor(*args)
                while True:
                    batch = await cursor.fetch(CHUNK_ROWS)
                    for row in batch:
                        writer.writerow([csv_cell(_plain(row[c])) for c in columns])
                    counts[name] += len(batch)
                    member.write(text.getvalue().encode("utf-8"))
                    text.seek(0)
                    text.truncate()
                    yield sink.take()
                    if len(batch) < CHUNK_ROWS:
                        break
        manifest = {
            "scope": scope["scope"],
            "exported_at": datetime.now(UTC).isoformat(),
            "files": counts,
            "format": "CSV, UTF-8, one header row; cells that would start a spreadsheet formula begin with '",
        }
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    yield sink.take()


def _uuids(values) -> list[uuid.UUID] | None:
    return None if values is None else [uuid.UUID(str(v)) for v in values]


def _plain(value):
    """Lists (jsonb arrays) and other non-dict JSON become JSON text; the rest as csv_cell writes it."""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return value
