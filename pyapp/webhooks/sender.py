"""POST a delivery to a customer URL, signed per Standard Webhooks, through the SSRF guard.

Sent with pyapp.net.http1 (pooled keep-alive connections to the vetted address: aiohttp's
per-request cost was most of the drainer's CPU). No redirect is followed, the whole request has
15 s, and the response kept for the delivery log is cut to 2,000 characters. The webhook-id is the
delivery's idempotency key, the same for every attempt and every replay.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime

from pyapp.net import FetchError, FetchRefused
from pyapp.net.http1 import PinnedClient, ProtocolError
from pyapp.outbox.senders import Delivery, Destination, Result, elapsed_ms, http_result
from pyapp.webhooks import signing

TIMEOUT_S = 15.0
RESPONSE_KEEP = 2000


def webhook_id(delivery: Delivery) -> str:
    return "msg_" + delivery.delivery_key.hex


def body_of(delivery: Delivery) -> bytes:
    """The request body: the stored JSON text as it is (the drainer takes it so), else the payload encoded."""
    if delivery.body is not None:
        return delivery.body.encode()
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSender:
    def __init__(self, *, allow_hosts=None, timeout: float = TIMEOUT_S, resolver=None, ssl_context=None):
        self.timeout = timeout
        self.client = PinnedClient(
            allow_hosts=allow_hosts, resolver=resolver, ssl_context=ssl_context, user_agent="Parley-Webhooks/1.0"
        )

    async def send(self, destination: Destination, delivery: Delivery) -> Result:
        body = body_of(delivery)
        msg_id = webhook_id(delivery)
        headers = signing.headers(list(destination.secrets), msg_id, int(time.time()), body)
        request = {"url": destination.target, "headers": headers, "body_bytes": len(body)}
        started = time.monotonic()
        try:
            resp = await self.client.post(
                destination.target, body, headers, timeout=self.timeout, keep=RESPONSE_KEEP * 4
            )
        except FetchRefused as exc:
            return Result(
                "failed",
                latency_ms=elapsed_ms(started),
                error=f"refused: {exc.message}"[:1000],
                request=request,
                pause_reason=f"The URL is not allowed: {exc.message}"[:1000],
            )
        except TimeoutError:
            return Result(
                "retry", latency_ms=elapsed_ms(started), error=f"no answer within {self.timeout:g}s", request=request
            )
        except (FetchError, OSError, ProtocolError, ValueError) as exc:  # FetchFailed: DNS
            return Result(
                "retry", latency_ms=elapsed_ms(started), error=f"{type(exc).__name__}: {exc}"[:1000], request=request
            )
        status = resp.status
        text = resp.body.decode("utf-8", "replace")[:RESPONSE_KEEP]
        retry_after = retry_after_seconds(resp.headers.get("retry-after")) if status == 429 else None
        return http_result(status, started, request, response=text, retry_after=retry_after)

    async def close(self) -> None:
        await self.client.close()
