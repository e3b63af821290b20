"""Log lines: human-readable by default (the message alone), one JSON object per line with
PARLEY_LOG_FORMAT=json. Either way every record carries the request, tenant and conversation it
belongs to where they are known: contextvars set where a request begins (the HTTP middleware, a
socket's hello) and where its tenant transaction begins (pyapp.db), read by a filter on the
handlers. A leaf: imports nothing from pyapp.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("parley_request_id", default=None)
TENANT_ID: ContextVar[str | None] = ContextVar("parley_tenant_id", default=None)
CONVERSATION_ID: ContextVar[str | None] = ContextVar("parley_conversation_id", default=None)
_VARS = {"request_id": REQUEST_ID, "tenant_id": TENANT_ID, "conversation_id": CONVERSATION_ID}


def bind(**ids: Any) -> None:
    """Set the ids known from here on in this task (and the tasks it starts); None leaves one as is."""
    for name, value in ids.items():
        if value is not None:
            _VARS[name].set(str(value))


def current() -> dict[str, str]:
    """The ids known here."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


class ContextFilter(logging.Filter):
    """Puts the known ids on every record (a record's own `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids, any `extra` fields. A
    message that is itself a JSON object (the access log, the jobs' lines) is merged in, not quoted."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        merged = None
        if message.startswith("{"):
            try:
                merged = json.loads(message)
            except ValueError:
                merged = None
        if isinstance(merged, dict):
            out.update(merged)
        else:
            out["message"] = message
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """The root logger for a process (`parley serve`, `parley jobs`): PARLEY_LOG_FORMAT (text |
    json) and PARLEY_LOG_LEVEL."""
    fmt = (fmt or os.environ.get("PARLEY_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("PARLEY_LOG_LEVEL", "INFO"))
