"""What the drainer hands an adapter, what it gets back, and the adapters by destination kind.

Adapters know nothing about tenants or the database: they get a destination (kind, target,
config, decrypted secrets) and a delivery (key, kind, payload, attempt), send it, and classify
the answer. The rules about what happens next (backoff, dead letters, pausing) are in SQL
(parley.record_outbox_results).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

Outcome = Literal["delivered", "retry", "failed"]

# Destination kinds whose adapter sends the stored body as it is (Delivery.body, not .payload).
RAW_BODY = frozenset({"webhook"})


@dataclass(frozen=True)
class Destination:
    id: UUID
    kind: str
    target: str
    config: dict[str, Any]
    ordered: bool
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delivery:
    id: int
    created_at: datetime
    delivery_key: UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    conversation_id: UUID | None = None
    thread: str | None = None  # channel kinds: the conversation's thread there, once made
    thread_title: str | None = None  # and the title it has (None: unknown)
    parts_sent: int = 0  # of a post split in parts, those earlier attempts delivered
    traceparent: str | None = None  # traces on: the span that enqueued it (the send continues its trace)
    # Kinds in RAW_BODY: the body as stored, JSON text sent as is (payload then stays empty: no
    # decoding and re-encoding per delivery on the drainer's hot path).
    body: str | None = None


@dataclass
class Result:
    outcome: Outcome
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    request: dict[str, Any] | None = None
    response: str | None = None
    retry_after: float | None = None  # seconds: nothing more goes to this destination before
    pause_reason: str | None = None  # the destination is gone (bot removed, address refused)
    parts_sent: int | None = None  # a split post: parts delivered so far (a retry sends the rest)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, delivery: Delivery) -> dict[str, Any]:
        """The JSON object parley.record_outbox_results takes for this attempt."""
        return {
            "id": delivery.id,
            "created_at": delivery.created_at.isoformat(),
            "outcome": self.outcome,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "error": self.error,
            "request": self.request,
            "response": self.response,
            "retry_after": self.retry_after,
            "pause_reason": self.pause_reason,
            "parts_sent": self.parts_sent,
            # The body sent: kept with the attempt when the delivery had none stored (take_outbox_batch
            # builds event bodies without writing them).
            "body": delivery.body if delivery.body is not None else json.dumps(delivery.payload, default=str),
        }


class Sender(Protocol):
    async def send(self, destination: Destination, delivery: Delivery) -> Result: ...

    async def close(self) -> None: ...


class Progress(Protocol):
    """What a sender reports while a post is under way, before its Result: a drainer that dies
    before the answer must not do it again. Only the call in flight then is done again (no channel
    takes an idempotency key): a thread made or renamed, each part of a split post delivered."""

    async def thread(self, delivery: Delivery, thread: str, title: str | None) -> None: ...

    async def parts(self, delivery: Delivery, parts_sent: int) -> None: ...


def classify_http(status: int) -> Outcome:
    """2xx delivered; 429, 408, 3xx (redirects are never followed) and 5xx retried; other 4xx stop."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status < 400 or status >= 500:
        return "retry"
    return "failed"


def elapsed_ms(started: float) -> int:
    """Milliseconds since ``started`` (a time.monotonic() reading): an attempt's latency."""
    return int((time.monotonic() - started) * 1000)


def http_result(
    status: int | None,
    started: float,
    request: dict[str, Any],
    *,
    response: str | None = None,
    error: str | None = None,
    retry_after: float | None = None,
) -> Result:
    """An attempt that got an HTTP answer (``status``; None: no answer, retried) as the drainer's Result:
    classified by classify_http, the error "HTTP <status>" unless delivered or given, and Retry-After
    kept only when the attempt is retried."""
    outcome: Outcome = "retry" if status is None else classify_http(status)
    return Result(
        outcome,
        status_code=status,
        latency_ms=elapsed_ms(started),
        request=request,
        response=response,
        error=error if error is not None or outcome == "delivered" else f"HTTP {status}",
        retry_after=retry_after if outcome == "retry" else None,
    )
