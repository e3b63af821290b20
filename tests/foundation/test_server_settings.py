"""Installation settings have one home: parley.server_setting_catalog (name, type, default, meaning)
and one typed reader, parley.server_setting (sql/12_server_settings.sql)."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
HOME = "12_server_settings.sql"


async def test_every_default_is_a_value_of_its_type(owner_conn):
    rows = await owner_conn.fetch("SELECT name, type::text, default_value FROM parley.server_setting_catalog")
    assert {r["name"] for r in rows} >= {"grace_period", "domain_grace", "referral_cap_cents", "branding_url"}
    bad = [r["name"] for r in rows if r["default_value"] is not None
           and not await owner_conn.fetchval("SELECT pg_input_is_valid($1, $2)", r["default_value"], r["type"])]
    assert bad == []


async def test_reader_takes_environment_then_database_then_default(tenant_conn):
    grace = "SELECT parley.server_setting('domain_grace', NULL::interval)::text"
    assert await tenant_conn.fetchval(grace) == "72:00:00"
    assert await tenant_conn.fetchval("SELECT parley.server_setting('referral_cap_cents', NULL::int)") == 10000
    assert await tenant_conn.fetchval(
        "SELECT source FROM parley.server_setting_catalog WHERE name = 'domain_grace'") == "default"
    # The database setting (ALTER DATABASE … SET parley.<name>, here for this transaction only).
    await tenant_conn.execute("SELECT set_config('parley.domain_grace', '5 hours', true)")
    assert await tenant_conn.fetchval(grace) == "05:00:00"
    assert await tenant_conn.fetchval(
        "SELECT source FROM parley.server_setting_catalog WHERE name = 'domain_grace'") == "database"
    # What the server wrote from its environment wins over the database setting.
    await tenant_conn.execute("SELECT set_config('parley.branding_label', 'From the database', true)")
    label = "SELECT parley.server_setting('branding_label', NULL::text)"
    assert await tenant_conn.fetchval(label) == "From the database"
    await tenant_conn.fetchval("SELECT parley.sync_server_branding('Help by Host Co', NULL)")
    assert await tenant_conn.fetchval(label) == "Help by Host Co"
    assert await tenant_conn.fetchval("SELECT parley.server_setting('branding_url', NULL::text)") is None


@pytest.mark.parametrize("call", [
    "SELECT parley.server_setting('domain_grace', NULL::int)",
    "SELECT parley.server_setting('no_such_setting', NULL::text)",
])
async def test_reader_refuses_an_unknown_name_or_another_type(tenant_conn, call):
    with pytest.raises(asyncpg.RaiseError, match="server_setting_catalog has no"):
        await tenant_conn.fetchval(call)


def test_settings_are_read_only_through_the_catalog():
    """No sql/ file reads a parley.* database setting itself, and every catalog row is read somewhere."""
    catalog = (SQL_DIR / HOME).read_text()
    names = re.findall(r"^      \('([a-z_]+)', '", catalog, flags=re.M)
    assert len(names) >= 9
    rest = {p.name: p.read_text() for p in SQL_DIR.glob("*.sql") if p.name != HOME}
    direct = [(name, m) for name, text in rest.items()
              for m in re.findall(r"current_setting\('parley\.(\w+)'", text) if m != "notified"]
    assert direct == []  # parley.notified is the events trigger's per-transaction flag, not a setting
    unread = [n for n in names if not any(f"server_setting('{n}'" in text for text in rest.values())]
    assert unread == []
