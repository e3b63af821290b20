"""Custom domains are re-verified after they went active (jobs/scheduled/recheck_domains.py, the same
schedule as every job) against a DNS server speaking the protocol on 127.0.0.1: a domain whose DNS no
longer proves ownership goes 'failing' (still served, owners e-mailed through the outbox over real
SMTP), is disabled only after 3 failed re-checks spanning 72 h (owners e-mailed again), recovers when
the records are back; a resolver that does not answer is not counted; only the jobs process re-checks."""
from __future__ import annotations

import asyncpg
import pytest
from jobs.outbox import OutboxDrainer
from jobs.runner import run_due_jobs
from jobs.schedule import register
from pyapp.channels.senders import EmailSender
from pyapp.mailer import SmtpMailer
from support.billing import DNS_TARGET, resolver_down, with_dns
from support.fakes.smtp import SmtpSink

TARGET = DNS_TARGET
HOST = "chat.shopco.com"


@pytest.fixture
def settings(settings, fake_dns):
    return with_dns(settings, fake_dns)


@pytest.fixture
async def smtp():
    s = SmtpSink().start()
    yield s
    s.stop()


async def active_domain(make_tenant, fake_dns, host=HOST):
    t = await make_tenant()
    async with t.tx() as conn:
        await conn.fetchval("SELECT parley.change_plan('white_label', 'webhook', '{}')")
    status, d = await t.call("POST", "/api/domains", json={"hostname": host})
    assert status == 201, d
    fake_dns.records[(f"_parley.{host}", "TXT")] = [d["txt"]["value"]]
    fake_dns.records[(host, "CNAME")] = [TARGET]
    status, d = await t.call("POST", f"/api/domains/{host}/verify")
    assert status == 200 and d["status"] == "active", d
    return t


async def recheck(jobs_pool, settings, owner_conn, *, age_hours: float = 25) -> bool:
    """The schedule says the job is due, and the domains' last check is age_hours old (the clock moved)."""
    await owner_conn.execute("UPDATE parley.custom_domains SET checked_at = now() - make_interval(hours => $1)"
                             " WHERE status IN ('active', 'failing')", age_hours)
    await owner_conn.execute("UPDATE parley.job_schedules SET next_run_at = now() WHERE name = 'recheck_domains'")
    return "recheck_domains" in await run_due_jobs(jobs_pool, "test-worker", only=["recheck_domains"],
                                                   settings=settings)


async def domain(owner_conn, t):
    return await owner_conn.fetchrow("SELECT * FROM parley.custom_domains WHERE tenant_id = $1", t.id)


async def tls_ask(server, host=HOST) -> int:
    status, _ = await server.call("GET", f"/api/domains/check?domain={host}")
    return status


async def backdate_failing(owner_conn, hours: float):
    await owner_conn.execute("UPDATE parley.custom_domains SET failing_since = now() - make_interval(hours => $1)"
                             " WHERE status = 'failing'", hours)


async def test_lost_records_fail_then_disable_after_the_grace_and_owners_are_mailed(
        make_tenant, fake_dns, settings, owner_conn, jobs_pool, smtp, console_client):
    t = await active_domain(make_tenant, fake_dns)
    bystander = await active_domain(make_tenant, fake_dns, "help.other-shop.com")
    await register(jobs_pool)
    # Checked an hour ago: not due, the DNS is not asked.
    fake_dns.queries.clear()
    assert await recheck(jobs_pool, settings, owner_conn, age_hours=1)
    assert fake_dns.queries == []

    # The customer moved their DNS: the TXT record is gone.
    del fake_dns.records[(f"_parley.{HOST}", "TXT")]
    assert await recheck(jobs_pool, settings, owner_conn)
    d = await domain(owner_conn, t)
    assert (d["status"], d["failed_checks"]) == ("failing", 1) and d["failing_since"] is not None
    assert (await domain(owner_conn, bystander))["status"] == "active"
    assert await tls_ask(t.server) == 200  # still served during the grace
    status, listed = await t.call("GET", "/api/domains")
    shown = listed["domains"][0]
    assert shown["status"] == "failing" and shown["check"]["txt"] is False and shown["failed_checks"] == 1
    assert shown["disabled_after"] > shown["failing_since"]
    c = console_client()  # the owner's console says so, with the deadline
    await c.sign_in(t.owner["email"], t.owner["password"])
    status, html, _ = await c.get("/console/domains")
    assert status == 200 and "no longer finds these records" in html and "still served" in html

    # Owners are e-mailed through the outbox (real SMTP).
    sender = EmailSender(SmtpMailer(smtp.url, "parley@example.test"), "https://parley.example")
    drainer = OutboxDrainer(jobs_pool, "domain-mail", senders={"email": sender})
    try:
        assert await drainer.drain() == 1
        ((rcpt, msg),) = await smtp.wait_for(1)
        assert rcpt == [t.owner["email"]] and "no longer check out" in msg["Subject"]
        body = msg.get_content()
        assert HOST in body and f"_parley.{HOST}" in body and "still served" in body

        # A second failure a day later, then a third, but the 72 h are not over: still failing.
        assert await recheck(jobs_pool, settings, owner_conn)
        await backdate_failing(owner_conn, 48)
        assert await recheck(jobs_pool, settings, owner_conn)
        d = await domain(owner_conn, t)
        assert (d["status"], d["failed_checks"]) == ("failing", 3) and await tls_ask(t.server) == 200
        # The 72 h have passed and it failed again: disabled, no longer routed, owners told.
        await backdate_failing(owner_conn, 73)
        assert await recheck(jobs_pool, settings, owner_conn)
        d = await domain(owner_conn, t)
        assert d["status"] == "disabled" and "no longer prove" in d["disabled_reason"]
        assert await tls_ask(t.server) == 404
        assert await drainer.drain() == 1
        (_, _), (rcpt, msg) = await smtp.wait_for(2)
        assert "was disabled" in msg["Subject"] and "no longer served" in msg.get_content()
    finally:
        await drainer.close()
    # A disabled domain is not re-checked any more; the records coming back do not re-enable it.
    fake_dns.records[(f"_parley.{HOST}", "TXT")] = [f"parley-verify={d['token']}"]
    assert await recheck(jobs_pool, settings, owner_conn)
    assert (await domain(owner_conn, t))["status"] == "disabled"
    actions = [r["action"] for r in await owner_conn.fetch(
        "SELECT action FROM parley.audit_log WHERE tenant_id = $1 AND action LIKE 'domain.%' ORDER BY id", t.id)]
    assert actions == ["domain.claimed", "domain.verified", "domain.failing", "domain.disabled"]
    assert (await domain(owner_conn, bystander))["status"] == "active"


async def test_a_failing_domain_recovers_and_resolver_outages_are_not_counted(
        make_tenant, fake_dns, settings, owner_conn, jobs_pool):
    t = await active_domain(make_tenant, fake_dns)
    await register(jobs_pool)
    with resolver_down(fake_dns, settings):  # our resolver is down: no proof either way
        assert await recheck(jobs_pool, settings, owner_conn)
    d = await domain(owner_conn, t)
    assert d["status"] == "active" and d["failed_checks"] == 0 and "did not answer" in d["check_result"]["error"]
    fake_dns.records[(HOST, "CNAME")] = ["elsewhere.example.net"]  # routed away
    assert await recheck(jobs_pool, settings, owner_conn)
    d = await domain(owner_conn, t)
    assert d["status"] == "failing" and d["check_result"]["routed"] is False
    await backdate_failing(owner_conn, 100)
    with resolver_down(fake_dns, settings):
        assert await recheck(jobs_pool, settings, owner_conn)
    assert (await domain(owner_conn, t))["failed_checks"] == 1  # an outage is not a failure
    fake_dns.records[(HOST, "CNAME")] = [TARGET]
    assert await recheck(jobs_pool, settings, owner_conn)
    d = await domain(owner_conn, t)
    assert (d["status"], d["failed_checks"], d["failing_since"]) == ("active", 0, None)
    assert await tls_ask(t.server) == 200
    # The admin's own "Verify" also brings a failing domain back.
    fake_dns.records[(HOST, "CNAME")] = ["elsewhere.example.net"]
    assert await recheck(jobs_pool, settings, owner_conn)
    assert (await domain(owner_conn, t))["status"] == "failing"
    fake_dns.records[(HOST, "CNAME")] = [TARGET]
    status, body = await t.call("POST", f"/api/domains/{HOST}/verify")
    assert status == 200 and body["status"] == "active"


async def test_only_the_jobs_process_records_a_recheck(make_tenant, fake_dns, settings, owner_conn, jobs_tx):
    t = await active_domain(make_tenant, fake_dns)
    observed = {"txt": [], "cname": None, "addresses": []}
    async with t.member_tx() as conn:  # the owner cannot fail (or revive) a domain by itself
        with pytest.raises(asyncpg.PostgresError) as err:
            await conn.fetchval("SELECT parley.record_domain_recheck($1, $2, $3)", HOST, observed, {"target": TARGET})
    assert err.value.hint == "forbidden" or isinstance(err.value, asyncpg.InsufficientPrivilegeError)
    async with t.member_tx() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM parley.domains_due_for_recheck(10)")
    other = await make_tenant()
    async with jobs_tx(other.id) as conn:  # another tenant's system transaction cannot reach it
        assert await conn.fetchval("SELECT parley.record_domain_recheck($1, $2, $3)", HOST, observed,
                                   {"target": TARGET}) is None
    assert (await domain(owner_conn, t))["status"] == "active"
