"""The outbox adapter for the `stripe` destination kind: referral credits applied as customer balance.

Like every adapter it knows no tenant and no rule: the delivery's payload (written by
parley.queue_referral_credits, sql/94_referrals.sql) names the customer, the amount and the
idempotency key; Stripe's answer is classified for the drainer (4xx other than 429: failed and
shown; 429, 5xx, network: retried; payments not configured here: retried until they are).
"""

from __future__ import annotations

import time

import stripe

from pyapp.billing.config import BillingConfig
from pyapp.billing.gateway import Gateway
from pyapp.outbox.senders import Delivery, Destination, Outcome, Result


class StripeBalanceSender:
    def __init__(self, config: BillingConfig):
        self.gateway = Gateway(config)

    async def send(self, destination: Destination, delivery: Delivery) -> Result:
        payload = delivery.payload
        if delivery.kind != "billing.referral_credit":
            return Result("failed", error=f"A Stripe destination does not send {delivery.kind}.")
        if not self.gateway.live:
            return Result("retry", error="Payments are not enabled on this installation (PARLEY_STRIPE_ENABLED).")
        request = {"customer": payload.get("customer"), "amount_cents": payload.get("amount_cents")}
        started = time.monotonic()
        try:
            txn = await self.gateway.credit_balance(
                customer=str(payload["customer"]),
                amount_cents=int(payload["amount_cents"]),
                currency=str(payload.get("currency") or "usd"),
                description="Parley referral credit",
                idempotency_key=str(payload["idempotency_key"]),
            )
        except stripe.StripeError as exc:
            status = exc.http_status
            outcome: Outcome = "failed" if status is not None and 400 <= status < 500 and status != 429 else "retry"
            return Result(
                outcome,
                status_code=status,
                latency_ms=_ms(started),
                request=request,
                error=f"Stripe: {type(exc).__name__}",
            )
        return Result("delivered", status_code=200, latency_ms=_ms(started), request=request, response=txn)

    async def close(self) -> None:
        await self.gateway.close()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
