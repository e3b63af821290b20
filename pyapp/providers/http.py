"""HTTP plumbing shared by the model providers: errors, retry policy, endpoints, SSE.

Kept apart from the providers so the OpenAI-compatible and Anthropic clients (and the
embedding client) agree on what is retried, how long to wait and what an error is called.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import aiohttp

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})

_STATUS_CODES = {
    400: "bad_request",
    401: "auth_failed",
    403: "auth_failed",
    404: "not_found",
    408: "timeout",
    413: "too_large",
    422: "bad_request",
    429: "rate_limited",
    529: "overloaded",
}


class ProviderError(Exception):
    """A model provider failed. ``code`` is stable (safe to store and show); ``retryable``
    says whether trying again later could help; ``retry_after`` is the server's hint (s)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


def endpoint(base_url: str, path: str) -> str:
    """Join a provider base URL and an API path, accepting base URLs with or without ``/v1``.

    ``https://api.openai.com/v1`` + ``/v1/embeddings`` and ``http://127.0.0.1:8000`` +
    ``/v1/embeddings`` both give the right URL; people configure both forms.
    """
    base = base_url.rstrip("/")
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base + path


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number (fractions accepted) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter, at least what the server asked for, within limits.

    ``max_retries``: retries after the first attempt. ``max_wait``: a server asking us to
    wait longer than this is not waited for (a chat visitor will not sit through it).
    """

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_wait: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based), or None to give up."""
        if attempt >= self.max_retries:
            return None
        backoff = min(self.max_delay, self.base_delay * (2**attempt)) * random.uniform(0.5, 1.0)
        wait = max(backoff, retry_after or 0.0)
        return None if wait > self.max_wait else wait


async def error_from_response(resp: aiohttp.ClientResponse, error_cls: type[ProviderError]) -> ProviderError:
    """A provider error for a non-2xx response, with the server's own message when it gave one."""
    detail = ""
    try:
        raw = await resp.content.read(4096)
        body = json.loads(raw)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            detail = str(err.get("message") or err.get("type") or "")
        elif isinstance(err, str):
            detail = err
    except Exception:
        detail = ""
    status = resp.status
    code = _STATUS_CODES.get(status, "upstream_error" if status >= 500 else "bad_request")
    message = f"HTTP {status}" + (f": {detail[:300]}" if detail else "")
    return error_cls(
        code,
        message,
        status=status,
        retryable=status in RETRYABLE_STATUSES,
        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
    )


@dataclass
class SSEEvent:
    event: str
    data: str


SSE_EVENT_MAX_CHARS = 1 << 20  # one event's data; a model's delta is a few characters, a usage chunk a few hundred


async def iter_sse(resp: aiohttp.ClientResponse, max_chars: int = SSE_EVENT_MAX_CHARS) -> AsyncIterator[SSEEvent]:
    """Server-sent events of a streaming response (``event:``/``data:`` fields, blank-line
    terminated, ``:`` comments ignored). A final event without its blank line is still
    delivered: some OpenAI-compatible servers close right after the last ``data:``.
    An event whose data passes ``max_chars`` (``data:`` lines that never end in a blank one)
    raises ValueError instead of growing without bound."""
    event, data = "", cast(list[str], [])
    size = 0
    async for raw in resp.content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data, size = "", [], 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            size += len(value) + 1
            if size > max_chars:
                raise ValueError(f"a server-sent event over {max_chars} characters")
            data.append(value)
    if data:
        yield SSEEvent(event or "message", "\n".join(data))
