"""A fake Stripe API on 127.0.0.1 and events signed with Stripe's own webhook scheme.

Speaks the parts of the real API Parley uses, with Stripe's form-encoded request bodies
(`a[b][0][c]=…`) and JSON answers: customers, Checkout Sessions, Billing Portal sessions,
subscriptions (retrieve, update), customer balance transactions (a repeated Idempotency-Key
gets the first answer) and Billing Meter events (the request checked as the real API checks it:
event name, identifier, a timestamp within the past 35 days, payload customer and whole-number
value, an API version; deduplicated on `identifier`, a repeated Idempotency-Key answered with the
first answer or refused when its parameters differ). `fail_next` / `fail_with` make the next calls
answer 500 or any status (429 with Retry-After). Every request is recorded (method, path, headers, decoded params).

Test helpers drive what Stripe itself would do: `complete_checkout` turns a session into a
subscription and returns the `checkout.session.completed` event, `set_status` moves a
subscription (e.g. to past_due), `event` builds any event, and `sign` produces the
`Stripe-Signature` header (HMAC-SHA256 over `t.` + body with the endpoint secret).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

WEBHOOK_SECRET = "whsec_test_parley_fake"
SECRET_KEY = "sk_test_parley_fake"


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for payload, as Stripe computes it."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def decode_form(body: str) -> dict:
    """Stripe's nested form encoding back into dicts and lists."""
    out: dict = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append(None)
                if last:
                    node[idx] = value
                else:
                    if node[idx] is None:
                        node[idx] = [] if nxt_is_index else {}
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if nxt_is_index else {})
    return out


class FakeStripe:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.customers: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.meter_events: dict[str, dict] = {}  # identifier -> first event
        self.meter_posts = 0
        self.balance_transactions: list[dict] = []
        self.idempotent: dict[str, dict] = {}  # Idempotency-Key -> first answer (balance transactions, meter events)
        self.fail_next: int = 0  # answer the next N API calls with 500
        # Answer the next API calls with these statuses, one each ((status, Retry-After or None)).
        self.fail_with: list[tuple[int, str | None]] = []
        # Meter events: `received` is set once one is accepted; while `hold` is an unset Event the
        # answer waits for it (the event is already recorded: a client that dies meanwhile never hears).
        self.received = asyncio.Event()
        self.hold: asyncio.Event | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    async def __aenter__(self) -> FakeStripe:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    # ------------------------------------------------------------------ the API

    async def _handle(self, request: web.Request) -> web.Response:
        params = decode_form(await request.text()) if request.method == "POST" else dict(request.query)
        self.requests.append({"method": request.method, "path": request.path, "headers": dict(request.headers),
                              "params": params})
        if request.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return _error(401, "Invalid API Key provided.")
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(500, "Something went wrong.", "api_error")
        if self.fail_with:
            status, retry_after = self.fail_with.pop(0)
            resp = _error(status, "Too many requests." if status == 429 else "Something went wrong.",
                          "rate_limit_error" if status == 429 else "api_error")
            if retry_after is not None:
                resp.headers["Retry-After"] = retry_after
            return resp
        path, method = request.path, request.method
        if method == "POST" and path == "/v1/customers":
            cus = {"id": self._id("cus"), "object": "customer", "name": params.get("name"),
                   "email": params.get("email"), "metadata": params.get("metadata", {})}
            self.customers[cus["id"]] = cus
            return web.json_response(cus)
        if method == "POST" and path == "/v1/checkout/sessions":
            sid = self._id("cs")
            session = {"id": sid, "object": "checkout.session", "url": f"https://checkout.stripe.test/c/pay/{sid}",
                       "mode": params.get("mode"), "customer": params.get("customer"),
                       "client_reference_id": params.get("client_reference_id"), "metadata": params.get("metadata", {}),
                       "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
                       "line_items": params.get("line_items", []),
                       "subscription_data": params.get("subscription_data", {}), "subscription": None,
                       "status": "open"}
            self.sessions[sid] = session
            return web.json_response(session)
        if method == "POST" and path == "/v1/billing_portal/sessions":
            sid = self._id("bps")
            return web.json_response({"id": sid, "object": "billing_portal.session", "customer": params.get("customer"),
                                      "return_url": params.get("return_url"),
                                      "url": f"https://billing.stripe.test/p/session/{sid}"})
        m = re.fullmatch(r"/v1/subscriptions/([A-Za-z0-9_]+)", path)
        if m:
            sub = self.subscriptions.get(m.group(1))
            if sub is None:
                return _error(404, "No such subscription.", code="resource_missing")
            if method == "POST" and "cancel_at_period_end" in params:
                sub["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
            return web.json_response(sub)
        m = re.fullmatch(r"/v1/customers/([A-Za-z0-9_]+)/balance_transactions", path)
        if m and method == "POST":
            if m.group(1) not in self.customers:
                return _error(404, "No such customer.", code="resource_missing")
            key = request.headers.get("Idempotency-Key")
            if key and key in self.idempotent:  # Stripe answers a retried key with the first result
                return web.json_response(self.idempotent[key])
            txn = {"id": self._id("cbtxn"), "object": "customer_balance_transaction", "customer": m.group(1),
                   "amount": int(params["amount"]), "currency": params.get("currency"),
                   "description": params.get("description")}
            self.balance_transactions.append(txn)
            self.customers[m.group(1)]["balance"] = self.customers[m.group(1)].get("balance", 0) + txn["amount"]
            if key:
                self.idempotent[key] = txn
            return web.json_response(txn)
        if method == "POST" and path == "/v1/billing/meter_events":
            self.meter_posts += 1
            refused = _meter_event_refusal(params, request.headers)
            if refused is not None:
                return refused
            key = request.headers.get("Idempotency-Key")
            if key and key in self.idempotent:  # a retried key: the first answer, if the request is the same
                first = self.idempotent[key]
                if first["params"] != params:
                    return _error(400, "Keys for idempotent requests can only be used with the same parameters.",
                                  "idempotency_error")
                return web.json_response(first["answer"])
            ident = params["identifier"]
            self.meter_events.setdefault(ident, params)  # Stripe keeps the first event per identifier
            answer = {"object": "billing.meter_event", "event_name": params["event_name"], "identifier": ident,
                      "payload": params["payload"], "timestamp": int(params["timestamp"]), "livemode": False}
            if key:
                self.idempotent[key] = {"params": params, "answer": answer}
            self.received.set()
            if self.hold is not None:
                await self.hold.wait()
            return web.json_response(answer)
        return _error(404, f"Unrecognized request URL ({method}: {path}).")

    # ------------------------------------------------------------------ what Stripe would do

    def complete_checkout(self, session_id: str, *, status: str = "active") -> dict:
        """The customer paid: the session gets a subscription; returns checkout.session.completed."""
        session = self.sessions[session_id]
        now = int(time.time())
        items = []
        for li in session["line_items"]:
            if "price" in li:
                price = {"id": li["price"], "object": "price", "recurring": {"interval": "month"}}
            else:
                pd = li["price_data"]
                price = {"id": self._id("price"), "object": "price", "unit_amount": int(pd["unit_amount"]),
                         "recurring": {"interval": pd["recurring"]["interval"]}}
            items.append({"id": self._id("si"), "object": "subscription_item", "price": price,
                          "quantity": int(li.get("quantity", 1)), "current_period_start": now,
                          "current_period_end": now + 30 * 86400})
        sub = {"id": self._id("sub"), "object": "subscription", "customer": session["customer"], "status": status,
               "cancel_at_period_end": False, "metadata": dict(session["subscription_data"].get("metadata", {})),
               "items": {"object": "list", "data": items}}
        self.subscriptions[sub["id"]] = sub
        session.update(subscription=sub["id"], status="complete")
        return self.event("checkout.session.completed", session)

    def set_status(self, sub_id: str, status: str) -> dict:
        self.subscriptions[sub_id]["status"] = status
        return self.subscriptions[sub_id]

    def invoice(self, sub_id: str, *, paid: bool) -> dict:
        sub = self.subscriptions[sub_id]
        return {"id": self._id("in"), "object": "invoice", "customer": sub["customer"],
                "status": "paid" if paid else "open",
                "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id}}}

    def event(self, kind: str, obj: dict, *, created: int | None = None) -> dict:
        return {"id": self._id("evt"), "object": "event", "type": kind, "api_version": "2026-10-28.endive",
                "created": int(time.time()) if created is None else created, "livemode": False,
                "pending_webhooks": 1, "data": {"object": json.loads(json.dumps(obj))}}


METER_EVENT_MAX_AGE_S = 35 * 86400  # Stripe refuses meter events older than 35 days
METER_EVENT_MAX_AHEAD_S = 5 * 60  # or more than 5 minutes in the future


def _meter_event_refusal(params: dict, headers) -> web.Response | None:
    """What the real API answers for a malformed Billing Meter event (None: it is well formed)."""
    for name in ("event_name", "identifier", "timestamp"):
        if not params.get(name):
            return _error(400, f"Missing required param: {name}.", code="parameter_missing")
    payload = params.get("payload")
    if not isinstance(payload, dict) or not payload.get("stripe_customer_id"):
        return _error(400, "Missing required param: payload[stripe_customer_id].", code="parameter_missing")
    if not re.fullmatch(r"[1-9][0-9]*", str(payload.get("value", ""))):
        return _error(400, "payload[value] must be a positive whole number.", code="parameter_invalid_integer")
    if not re.fullmatch(r"[0-9]+", str(params["timestamp"])):
        return _error(400, "Invalid timestamp.", code="parameter_invalid_integer")
    age = time.time() - int(params["timestamp"])
    if age > METER_EVENT_MAX_AGE_S or age < -METER_EVENT_MAX_AHEAD_S:
        return _error(400, "The timestamp must be within the past 35 days and not more than 5 minutes in the future.",
                      code="timestamp_too_far_in_past" if age > 0 else "timestamp_in_future")
    if not headers.get("Stripe-Version"):
        return _error(400, "No API version was given.")
    return None


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> web.Response:
    err = {"type": kind, "message": message}
    if code:
        err["code"] = code
    return web.json_response({"error": err}, status=status)
