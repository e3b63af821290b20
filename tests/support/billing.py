"""Billing test fixtures: workspaces reached through the real server, and SQL called on its parley_app
pool as the server calls it (service for the webhook, system for jobs, a signed-in member)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from dataclasses import dataclass

import pytest
from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx


@dataclass
class Tenant:
    server: object
    owner: dict

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self.owner["tenant_id"])

    @property
    def token(self) -> str:
        return self.owner["access_token"]

    def tx(self, kind: str = "service", actor_id: str | None = None, min_role: str = "visitor"):
        """A tenant transaction on the server's own pool, as the webhook (service) or jobs (system) open it."""
        return tenant_tx(self.server.app[POOL], Actor(tenant_id=self.id, kind=kind, actor_id=actor_id,
                                                      min_role=min_role))

    def member_tx(self, person: dict | None = None):
        """A transaction as a signed-in member (the owner by default), exactly as a route opens it."""
        from pyapp.context import SETTINGS
        from pyapp.security import decode_access_token

        person = person or self.owner
        claims = decode_access_token(self.server.app[SETTINGS].secret_key, person["access_token"])
        return tenant_tx(self.server.app[POOL], Actor(tenant_id=self.id, kind="user", actor_id=str(claims.user_id),
                                                      session_id=claims.session_id, min_role="agent"))

    async def call(self, method: str, path: str, **kw):
        kw.setdefault("token", self.token)
        return await self.server.call(method, path, **kw)


@pytest.fixture
def make_tenant(server, signup):
    async def make() -> Tenant:
        return Tenant(server, await signup(server))
    return make


@pytest.fixture
async def tenant(make_tenant) -> Tenant:
    return await make_tenant()


@pytest.fixture
async def jobs_pool(settings):
    """The jobs process's own login (parley_jobs), for the dunning sweep and the warnings job."""
    from pyapp.db import create_pool

    pool = await create_pool(settings.jobs_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
def jobs_tx(jobs_pool):
    """`jobs_tx(tenant_id)`: a system transaction for one tenant, as `parley jobs` opens it."""
    def open_tx(tenant_id):
        return tenant_tx(jobs_pool, Actor(tenant_id=tenant_id, kind="system", actor_id="jobs"))
    return open_tx


# ------------------------------------------------------------------ Stripe live against the local fake

PUBLIC = "https://parley.example.com"


@pytest.fixture
async def fake_stripe():
    from support.fakes.stripe_api import FakeStripe

    async with FakeStripe() as fake:
        yield fake


def stripe_live(settings, fake):
    """Settings with payments live against the fake and PUBLIC as the public URL."""
    from pyapp.billing.config import BillingConfig

    from support.fakes.stripe_api import SECRET_KEY, WEBHOOK_SECRET

    settings.public_url = PUBLIC
    settings.extra["billing"] = BillingConfig(enabled=True, secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET,
                                              api_base=fake.base_url)
    return settings


async def deliver(server, event: dict | bytes, *, secret=None, timestamp=None, signature=None):
    """POST an event to the webhook, signed with Stripe's scheme (or as given)."""
    from support.fakes.stripe_api import WEBHOOK_SECRET, sign

    payload = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not False:
        headers["Stripe-Signature"] = signature or sign(payload, secret or WEBHOOK_SECRET, timestamp)
    async with server.http.post(server.base_url + "/api/billing/webhook", data=payload, headers=headers) as resp:
        return resp.status, await resp.json()


async def subscribe(tenant, fake, plan="pro", interval="month", extra_seats=0):
    """Checkout through the API (a hostile Host header, which must not matter); the fake completes it."""
    status, body = await tenant.call("POST", "/api/billing/checkout",
                                     json={"plan": plan, "interval": interval, "extra_seats": extra_seats},
                                     headers={"Host": "evil.example"})
    assert status == 200, body
    session_id = body["url"].rsplit("/", 1)[1]
    return fake.sessions[session_id], fake.complete_checkout(session_id)


# ------------------------------------------------------------------ custom domains against the local DNS server

DNS_TARGET = "edge.parley-cloud.net"


@pytest.fixture
async def fake_dns():
    from support.fakes.dns_server import FakeDns

    async with FakeDns() as server:
        yield server


def with_dns(settings, fake_dns):
    """Settings whose custom-domain checks ask the local DNS server; the target has an address there."""
    from pyapp.domains.dns import DomainConfig

    settings.public_url = "https://app.parley-cloud.net"
    # The resolver's usual lifetime: the local server answers in milliseconds, but a test process on a
    # loaded machine can stall past a short one (a verification then read "pending"). Tests of a
    # resolver that does not answer shorten it (resolver_down).
    settings.extra["domains"] = DomainConfig(resolver=("127.0.0.1", fake_dns.port), target=DNS_TARGET)
    fake_dns.records[(DNS_TARGET, "A")] = ["203.0.113.10"]
    return settings


@contextlib.contextmanager
def resolver_down(fake_dns, settings, app=None, *, timeout: float = 1.0):
    """The DNS server stops answering, and lookups give up after `timeout` seconds instead of the usual
    lifetime: in the jobs' checks (they read `settings`) and, given its app, in a running server."""
    from pyapp.domains.routes import DNS

    usual = settings.extra["domains"]
    settings.extra["domains"] = quick = dataclasses.replace(usual, timeout=timeout)
    checker = app[DNS] if app is not None else None
    if checker is not None:
        checker.config = quick
    fake_dns.silent = True
    try:
        yield
    finally:
        fake_dns.silent = False
        settings.extra["domains"] = usual
        if checker is not None:
            checker.config = usual
