"""The outbox adapter for the `stripe` destination kind: referral credits applied as customer
balance, and overage reported as Billing Meter events.

Like every adapter it knows no tenant and no rule: the delivery's payload (written by
parley.queue_referral_credits, sql/94_referrals.sql, or parley.queue_usage_reports,
sql/91_metering.sql) names the customer, the amount or quantity and the idempotency key. The
library's own retries are off: the outbox schedules them. Stripe's answer is classified for the
drainer: 429, 5xx and network errors are retried (a Retry-After honoured); a refused API key
pauses the destination (KEY_REFUSED); any other 4xx fails the delivery, shown. With payments off on
this installation (no PARLEY_STRIPE_ENABLED and key) nothing is sent: the destination is paused with
PAYMENTS_OFF as its visible reason, its deliveries kept. Both are the operator's to fix: `parley jobs`
resumes such destinations when it starts with payments on (parley.resume_stripe_destinations).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import stripe

from pyapp.billing.config import BillingConfig
from pyapp.billing.gateway import Gateway
from pyapp.outbox.senders import Delivery, Destination, Result, elapsed_ms, http_result

PAYMENTS_OFF = (
    "Payments are off on this installation (PARLEY_STRIPE_ENABLED and PARLEY_STRIPE_SECRET_KEY): "
    "held until the jobs process starts with them on."
)
KEY_REFUSED = (
    "Stripe refuses the API key (PARLEY_STRIPE_SECRET_KEY): held until the jobs process starts with a good one."
)
# Pauses about the operator's configuration, which `parley jobs` lifts when it starts with payments on.
OPERATOR_PAUSES = (PAYMENTS_OFF, KEY_REFUSED)


class StripeSender:
    def __init__(self, config: BillingConfig):
        self.gateway = Gateway(config, network_retries=0)

    @property
    def live(self) -> bool:
        return self.gateway.live

    async def send(self, destination: Destination, delivery: Delivery) -> Result:
        payload = delivery.payload
        if delivery.kind not in ("billing.referral_credit", "billing.meter_event"):
            return Result("failed", error=f"A Stripe destination does not send {delivery.kind}.")
        if not self.gateway.live:
            return Result("retry", error=PAYMENTS_OFF, pause_reason=PAYMENTS_OFF)
        started = time.monotonic()
        request: dict[str, Any] = {"customer": payload.get("customer"), "idempotency_key": payload.get("identifier")}
        try:
            if delivery.kind == "billing.meter_event":
                request["value"] = payload.get("value")
                answer = await self.gateway.meter_event(
                    event_name=self.gateway.config.meters[str(payload["metric"])],
                    customer=str(payload["customer"]),
                    value=int(payload["value"]),
                    identifier=str(payload["identifier"]),
                    timestamp=int(payload["timestamp"]),
                )
                response = str(answer.get("identifier"))
            else:
                request.update(amount_cents=payload.get("amount_cents"), idempotency_key=payload.get("idempotency_key"))
                response = await self.gateway.credit_balance(
                    customer=str(payload["customer"]),
                    amount_cents=int(payload["amount_cents"]),
                    currency=str(payload.get("currency") or "usd"),
                    description="Parley referral credit",
                    idempotency_key=str(payload["idempotency_key"]),
                )
        except stripe.StripeError as exc:
            return _refused(exc, request, started)
        return Result("delivered", status_code=200, latency_ms=elapsed_ms(started), request=request, response=response)

    async def close(self) -> None:
        await self.gateway.close()


def _refused(exc: stripe.StripeError, request: dict, started: float) -> Result:
    status = exc.http_status
    retry_after = _retry_after(exc)
    error = f"Stripe: {type(exc).__name__}"
    if status in (401, 403):  # the key is refused: held (retried) with the destination paused
        return replace(http_result(status, started, request, error=error), outcome="retry", pause_reason=KEY_REFUSED)
    return http_result(status, started, request, error=error, retry_after=retry_after)


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("Retry-After") or (exc.headers or {}).get("retry-after")
    try:
        return min(max(float(value), 0.0), 3600.0) if value is not None else None
    except ValueError:
        return None
