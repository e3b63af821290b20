"""The Stripe adapter: checkout, portal, subscription reads, meter events, webhook verification.

Knows nothing about tenants or rules: it turns Parley's requests into Stripe calls (the
`stripe` library, API version pinned) and Stripe's subscriptions into the plain state dict
`parley.change_plan` takes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import stripe
from stripe.params import CustomerCreateParams
from stripe.params.checkout import SessionCreateParamsLineItem

from pyapp.billing.config import STRIPE_API_VERSION, BillingConfig
from pyapp.errors import ApiError
from pyapp.inputs import parse_json

Interval = Literal["month", "year"]
WEBHOOK_TOLERANCE_S = 300


def stripe_event(payload: bytes) -> dict:
    """A verified body as an event: the client JSON limits (nesting, NUL, int64: 400/422), then the fields
    the webhook reads, with their types (an id, a type, `created` seconds, `data.object` an object),
    so a signed body of another shape is a 400 rather than a 500."""
    event = parse_json(payload)
    data = event.get("data", {}) if isinstance(event, dict) else None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created", 0), int)
        and isinstance(data, dict)
        and isinstance(data.get("object", {}), dict)
    ):
        raise ApiError(400, "invalid_event", "The body is not a Stripe event.")
    return event


class PaymentsDisabled(Exception):
    """Payments are not configured on this installation."""


class Gateway:
    def __init__(self, config: BillingConfig, *, network_retries: int = 2):
        self.config = config
        self.network_retries = network_retries  # the outbox's sender passes 0: the outbox schedules retries
        self._client: stripe.StripeClient | None = None
        self._http: stripe.AIOHTTPClient | None = None

    @property
    def live(self) -> bool:
        return self.config.live

    def client(self) -> stripe.StripeClient:
        if not self.live:
            raise PaymentsDisabled()
        if self._client is None:
            self._http = stripe.AIOHTTPClient(timeout=20)
            kwargs: dict[str, Any] = {
                "stripe_version": STRIPE_API_VERSION,
                "http_client": self._http,
                "max_network_retries": self.network_retries,
            }
            if self.config.api_base:
                kwargs["base_addresses"] = {"api": self.config.api_base}
            self._client = stripe.StripeClient(self.config.secret_key, **kwargs)
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close_async()
        self._client = self._http = None

    # ------------------------------------------------------------------ webhook

    def verify(self, payload: bytes, signature: str | None) -> dict:
        """The event as a dict, or stripe.SignatureVerificationError (forged, stale, unsigned).

        The library checks `t.` + raw body with HMAC-SHA256 against every v1 signature and the
        timestamp against a 300 s tolerance; without a configured secret nothing verifies.
        """
        secret = self.config.webhook_secret
        if not secret:
            raise stripe.SignatureVerificationError("No webhook secret is configured.", signature, payload)
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), signature, secret, WEBHOOK_TOLERANCE_S)
        return stripe_event(payload)

    # ------------------------------------------------------------------ customers, checkout, portal

    async def create_customer(self, tenant_id: str, name: str, email: str | None) -> str:
        params: CustomerCreateParams = {"name": name, "metadata": {"tenant_id": tenant_id}}
        if email:
            params["email"] = email
        customer = await self.client().v1.customers.create_async(
            params, options={"idempotency_key": f"parley-customer-{tenant_id}"}
        )
        return customer.id

    def _line_items(self, plan: dict, interval: Interval, extra_seats: int) -> list[SessionCreateParamsLineItem]:
        items = [
            self._item(
                plan,
                interval,
                f"{plan['id']}:{interval}",
                plan["price_monthly_cents"] if interval == "month" else plan["price_annual_cents"],
                f"Parley {plan['name']}",
                1,
            )
        ]
        if extra_seats:
            seat_cents = plan["seat_price_cents"] * (1 if interval == "month" else 10)
            items.append(self._item(plan, interval, f"seat:{interval}", seat_cents, "Parley extra seat", extra_seats))
        return items

    def _item(
        self, plan: dict, interval: Interval, name: str, cents: int, label: str, quantity: int
    ) -> SessionCreateParamsLineItem:
        price = self.config.prices.get(name)
        if price:
            return {"price": price, "quantity": quantity}
        return {
            "quantity": quantity,
            "price_data": {
                "currency": self.config.currency,
                "unit_amount": cents,
                "recurring": {"interval": interval},
                "product_data": {"name": label},
            },
        }

    async def checkout_session(
        self,
        *,
        tenant_id: str,
        customer: str,
        plan: dict,
        interval: Interval,
        extra_seats: int,
        success_url: str,
        cancel_url: str,
    ) -> str:
        """A subscription Checkout Session; its metadata names the tenant, plan and interval."""
        meta = {"tenant_id": tenant_id, "plan": plan["id"], "interval": interval, "extra_seats": str(extra_seats)}
        session = await self.client().v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "customer": customer,
                "client_reference_id": tenant_id,
                "line_items": self._line_items(plan, interval, extra_seats),
                "success_url": success_url,
                "cancel_url": cancel_url,
                "metadata": meta,
                "subscription_data": {"metadata": meta},
            }
        )
        if session.url is None:  # Stripe sets it for hosted sessions, which these are
            raise stripe.InvalidRequestError("Stripe returned a Checkout Session without a URL.", None)
        return session.url

    async def portal_session(self, customer: str, return_url: str) -> str:
        session = await self.client().v1.billing_portal.sessions.create_async(
            {"customer": customer, "return_url": return_url}
        )
        return session.url

    async def cancel_at_period_end(self, subscription_id: str) -> dict:
        sub = await self.client().v1.subscriptions.update_async(subscription_id, {"cancel_at_period_end": True})
        return sub.to_dict()

    # ------------------------------------------------------------------ subscriptions

    async def subscription(self, subscription_id: str) -> dict:
        """Re-read a subscription (events arrive out of order: the object is the truth)."""
        sub = await self.client().v1.subscriptions.retrieve_async(subscription_id)
        return sub.to_dict()

    def plan_of(self, sub: dict) -> tuple[str | None, str, int]:
        """(plan id, interval, extra seats) of a subscription: named prices first, then its metadata."""
        meta = sub.get("metadata") or {}
        by_price = {price: name for name, price in self.config.prices.items()}
        plan, interval, seats = None, meta.get("interval") or "month", None
        for item in (sub.get("items") or {}).get("data", []):
            price = item.get("price") or {}
            name = by_price.get(price.get("id"))
            interval = (price.get("recurring") or {}).get("interval") or interval
            if name and name.startswith("seat:"):
                seats = int(item.get("quantity") or 0)
            elif name:
                plan = name.split(":", 1)[0]
        plan = plan or meta.get("plan")
        if seats is None:
            seats = int(meta.get("extra_seats") or 0)
        return plan, interval, seats

    def state_of(self, sub: dict, *, synced_at: dt.datetime, delinquent_since: dt.datetime | None = None) -> dict:
        """The subscription as parley.change_plan's p_state."""
        _, interval, seats = self.plan_of(sub)
        item = ((sub.get("items") or {}).get("data") or [{}])[0]
        start = sub.get("current_period_start") or item.get("current_period_start")
        end = sub.get("current_period_end") or item.get("current_period_end")
        customer = sub.get("customer")
        state = {
            "provider": "stripe",
            "interval": interval,
            "status": _status(sub.get("status")),
            "extra_seats": seats,
            "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
            "customer_ref": customer if isinstance(customer, str) else (customer or {}).get("id"),
            "subscription_ref": sub.get("id"),
            "synced_at": synced_at.isoformat(),
            "current_period_start": _iso(start),
            "current_period_end": _iso(end),
        }
        if delinquent_since is not None:
            state["delinquent_since"] = delinquent_since.isoformat()
        return state

    # ------------------------------------------------------------------ metering

    async def meter_event(self, *, event_name: str, customer: str, value: int, identifier: str, timestamp: int) -> dict:
        """One Billing Meter event; Stripe drops a second event with the same identifier (sent as the
        Idempotency-Key too, so a resend within 24 h gets the first answer)."""
        event = await self.client().v1.billing.meter_events.create_async(
            {
                "event_name": event_name,
                "identifier": identifier,
                "timestamp": timestamp,
                "payload": {"stripe_customer_id": customer, "value": str(value)},
            },
            options={"idempotency_key": identifier},
        )
        return event.to_dict()

    # ------------------------------------------------------------------ customer balance

    async def credit_balance(
        self, *, customer: str, amount_cents: int, currency: str, description: str, idempotency_key: str
    ) -> str:
        """Credit a customer's balance (a negative balance transaction: Stripe takes it off the next
        invoices); the idempotency key makes a resend apply once. Returns the transaction id."""
        txn = await self.client().v1.customers.balance_transactions.create_async(
            customer,
            {"amount": -abs(amount_cents), "currency": currency, "description": description},
            options={"idempotency_key": idempotency_key},
        )
        return txn.id


def _status(status: str | None) -> str:
    return {"incomplete_expired": "canceled", "paused": "unpaid"}.get(status or "", status or "incomplete")


def _iso(epoch) -> str | None:
    if not epoch:
        return None
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).isoformat()


def invoice_subscription(invoice: dict) -> str | None:
    """The subscription an invoice bills (top level in older API versions, under parent since basil)."""
    sub = invoice.get("subscription")
    if not sub:
        sub = (((invoice.get("parent") or {}).get("subscription_details")) or {}).get("subscription")
    if isinstance(sub, dict):
        sub = sub.get("id")
    return sub
