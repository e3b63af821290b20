"""The pooled-isolation mix (tests/hardening/test_pooled_isolation.py, bench/pooled.py): many
tenants' requests against servers whose pools go through PgBouncer, each answer checked against
the tenant that asked."""
from __future__ import annotations

import asyncio
import random

import aiohttp

from support.accounts import sign_up
from support.realtime import create_chatbot


async def make_tenants(servers, owner_conn, n: int) -> list[dict]:
    """n workspaces signed up through the servers in turn, each with one chatbot named after it;
    `foreign_bot` is another tenant's chatbot (a write naming it is refused inside SQL)."""
    out = []
    for i in range(n):
        owner = await sign_up(servers[i % len(servers)])
        bot = await create_chatbot(owner_conn, owner["tenant_id"], name=f"bot-{owner['tenant_id']}")
        out.append({**owner, **bot, "marker": f"lead-{owner['tenant_id']}"})
    for i, t in enumerate(out):
        t["foreign_bot"] = str(out[(i + 1) % n]["chatbot_id"])
    return out


def _mine(t: dict, status: int, body, kind: str) -> bool:
    """Whether an answer holds only the asking tenant's rows (or is a refusal in the error shape)."""
    if status >= 400:
        return isinstance(body, dict) and "code" in body.get("error", {})
    if kind == "chatbots":
        return [b["name"] for b in body["chatbots"]] == [f"bot-{t['tenant_id']}"]
    if kind == "leads":
        return all(lead["name"] == t["marker"] for lead in body["leads"])
    if kind == "lead":
        return body["name"] == t["marker"]
    return False


async def _request(http, base: str, t: dict, rng: random.Random) -> tuple[str, int, object]:
    """One request of the mix: read chatbots, read leads, write a lead, a write SQL refuses
    inside its transaction (another tenant's chatbot id: the tenant was set, then rolled back)."""
    roll = rng.random()
    headers = {"Authorization": f"Bearer {t['access_token']}"}
    if roll < 0.4:
        kind, method, path, body = "chatbots", "GET", "/api/chatbots", None
    elif roll < 0.7:
        kind, method, path, body = "leads", "GET", "/api/leads?limit=20", None
    elif roll < 0.85:
        kind, method, path, body = "lead", "POST", "/api/leads", {"name": t["marker"], "email": "a@example.test"}
    else:
        kind, method, path = "abort", "POST", "/api/leads"
        body = {"name": t["marker"], "email": "a@example.test", "chatbot_id": t["foreign_bot"]}
    async with http.request(method, base + path, json=body, headers=headers) as resp:
        return kind, resp.status, await resp.json()


async def run_mix(servers, tenants, total: int, concurrency: int, seed: int = 17) -> dict:
    """`total` requests spread over the tenants and both servers; about 1 in 12 is abandoned by
    the client after 0-20 ms. Returns counts; `mixups` lists every answer that was not the
    asking tenant's."""
    rng = random.Random(seed)
    counts = {"ok": 0, "refused": 0, "aborted_in_sql": 0, "abandoned": 0, "mixups": []}
    queue = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker() -> None:
            for n in queue:
                t = tenants[rng.randrange(len(tenants))]
                base = servers[n % len(servers)].base_url
                if rng.random() < 1 / 12:
                    task = asyncio.ensure_future(_request(http, base, t, rng))
                    await asyncio.sleep(rng.random() * 0.02)
                    task.cancel()
                    try:
                        kind, status, body = await task
                    except asyncio.CancelledError:
                        counts["abandoned"] += 1
                        continue
                else:
                    kind, status, body = await _request(http, base, t, rng)
                if kind == "abort":
                    if status == 200 or status == 201 or not _mine(t, status, body, kind):
                        counts["mixups"].append((t["tenant_id"], kind, status, body))
                    counts["aborted_in_sql"] += 1
                elif not _mine(t, status, body, kind):
                    counts["mixups"].append((t["tenant_id"], kind, status, body))
                elif status >= 400:
                    counts["refused"] += 1
                else:
                    counts["ok"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts
