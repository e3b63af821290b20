"""One error shape for every client: {"error": {"code", "message"}} with the right status."""

from __future__ import annotations

from typing import Any

import asyncpg

from pyapp.metrics import count_refusal

# Postgres errors the schema raises on purpose, mapped to what the client did wrong.
_SQLSTATE_MAP = {
    "23505": (409, "conflict", "That already exists."),
    "23503": (404, "not_found", "A referenced object does not exist."),
    "23514": (422, "invalid", "A value is out of range or not allowed."),
    "23502": (422, "invalid", "A required value is missing."),
    "22P02": (422, "invalid", "A value has the wrong format."),
    "22001": (413, "too_long", "A value is too long."),
    "22021": (422, "invalid_encoding", "Text contains characters that cannot be stored."),
    "22P05": (422, "invalid_text", "Text contains characters that cannot be stored (NUL)."),
    "22003": (422, "out_of_range", "A number is out of range."),
    "54001": (400, "too_deep", "The input is nested too deeply."),
    "22023": (422, "invalid", "A parameter is not valid."),
    "42501": (403, "forbidden", "Not allowed."),
    "40001": (409, "retry", "A concurrent change conflicted; retry."),
    "40P01": (409, "retry", "A concurrent change conflicted; retry."),
    "55P03": (409, "busy", "The object is locked by another change; retry."),
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}
        count_refusal(status, code)

    def body(self) -> dict:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def from_postgres(exc: asyncpg.PostgresError) -> ApiError | None:
    """Translate a database error to an ApiError, or None for a real server fault."""
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("PT") and state[2:].isdigit():
        return ApiError(
            int(state[2:]),
            getattr(exc, "hint", None) or "error",
            str(exc.args[0] if exc.args else exc),
            headers=_retry_after(getattr(exc, "detail", None)),
        )
    if state in _SQLSTATE_MAP:
        status, code, message = _SQLSTATE_MAP[state]
        return ApiError(status, code, message)
    return None


def _retry_after(detail: str | None) -> dict:
    """SQL's rate limits put `retry_after=<seconds>` in DETAIL: it becomes the Retry-After header."""
    if detail and detail.startswith("retry_after=") and detail[12:].isdigit():
        return {"Retry-After": detail[12:]}
    return {}


OUTAGE_RETRY_AFTER_S = 5  # what a client is told to wait while the database is unreachable
BUSY_RETRY_AFTER_S = 1  # what a client is told to wait while every pooled connection is in use


def _retry_later(code: str, message: str, seconds: int) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(seconds)})


def database_unavailable() -> ApiError:
    """The answer while the database cannot be reached (stopped, restarting, failing over): retryable."""
    return _retry_later("database_unavailable", "The database is unavailable; retry shortly.", OUTAGE_RETRY_AFTER_S)


def database_busy() -> ApiError:
    """The answer when no pooled connection came free in time (pyapp.db.PoolBusy): retryable."""
    return _retry_later("database_busy", "The server is busy; retry shortly.", BUSY_RETRY_AFTER_S)


def not_found(what: str = "object") -> ApiError:
    return ApiError(404, "not_found", f"No such {what}.")
