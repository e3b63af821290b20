"""Envelope encryption of channel secrets: sealed per tenant and channel, a data key per tenant
wrapped by a key-encryption key from the environment, and a KEK rotation without downtime."""
import base64
import os
import subprocess
import sys
import uuid

import pytest
from pyapp.channels.envelope import (
    DERIVED_ID,
    Keyring,
    SecretUnavailable,
    open_sealed,
    open_secrets,
    seal,
)
from support.outbox import ROOT, make_workspace
from support.server import TEST_SECRET


def test_sealed_secret_opens_only_for_its_tenant_channel_and_purpose():
    key = os.urandom(32)
    t, c = uuid.uuid4(), uuid.uuid4()
    blob = seal(key, t, c, "token", "123:ABC")
    assert open_sealed(key, t, c, "token", blob) == "123:ABC" and b"123:ABC" not in blob
    for args in ((uuid.uuid4(), c, "token"), (t, uuid.uuid4(), "token"), (t, c, "signing")):
        with pytest.raises(SecretUnavailable):
            open_sealed(key, *args, blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SecretUnavailable):
        open_sealed(key, t, c, "token", tampered)


def test_keyring_from_environment():
    derived = Keyring.from_settings(TEST_SECRET, environ={})
    assert derived.current == DERIVED_ID
    k1 = base64.b64encode(os.urandom(32)).decode()
    ring = Keyring.from_settings(TEST_SECRET, environ={"PARLEY_KEKS": f"k1:{k1}"})
    assert ring.current == "k1" and set(ring.keks) == {"k1", DERIVED_ID}
    t = uuid.uuid4()
    kek_id, wrapped = ring.wrap(t, 1, b"x" * 32)
    assert ring.unwrap(t, 1, kek_id, wrapped) == b"x" * 32
    with pytest.raises(SecretUnavailable):
        ring.unwrap(uuid.uuid4(), 1, kek_id, wrapped)  # wrapped for another tenant
    with pytest.raises(SecretUnavailable):
        derived.unwrap(t, 1, kek_id, wrapped)  # a server without k1 cannot open it
    with pytest.raises(ValueError):
        Keyring.from_settings(TEST_SECRET, environ={"PARLEY_KEKS": "short:AAAA"})


async def test_kek_rotation_rewraps_without_downtime(server, signup, settings, owner_conn, monkeypatch):
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    ws = await make_workspace(server, signup, settings, owner_conn)
    try:
        status, ep = await ws.call("POST", "/api/webhooks", json={"url": "http://127.0.0.1:9/h",
                                                                "event_kinds": ["closed"]})
        assert status == 201
        endpoint = uuid.UUID(ep["id"])
        row = await owner_conn.fetchrow("SELECT * FROM parley.tenant_data_keys WHERE tenant_id = $1", ws.tenant.id)
        assert row["kek_id"] == DERIVED_ID

        new = base64.b64encode(os.urandom(32)).decode()
        env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
               "PARLEY_KEKS": f"kek-2027:{new}", "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "pyapp.cli", "rotate-kek"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "re-wrapped 1 data key(s) under kek-2027" in out.stdout
        assert new not in out.stdout + out.stderr and ep["secret"] not in out.stdout + out.stderr
        after = await owner_conn.fetchrow("SELECT * FROM parley.tenant_data_keys WHERE tenant_id = $1", ws.tenant.id)
        assert after["kek_id"] == "kek-2027" and after["wrapped"] != row["wrapped"]

        # The same secret opens with the new keyring; a server still on the old key alone cannot.
        from pyapp.db import Actor, tenant_tx
        ring = Keyring.from_settings(TEST_SECRET, environ={"PARLEY_KEKS": f"kek-2027:{new}"})
        async with tenant_tx(await ws.tenant.pool("jobs"), Actor(tenant_id=ws.tenant.id, kind="system",
                                                                   actor_id="t")) as conn:
            assert await open_secrets(conn, ring, ws.tenant.id, endpoint, "signing") == [ep["secret"]]
            with pytest.raises(SecretUnavailable):
                await open_secrets(conn, Keyring.from_settings(TEST_SECRET, environ={}), ws.tenant.id, endpoint,
                                   "signing")
        # Running it again has nothing left to do.
        out = subprocess.run([sys.executable, "-m", "pyapp.cli", "rotate-kek"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert "re-wrapped 0 data key(s)" in out.stdout
    finally:
        await ws.close()


async def test_the_app_role_cannot_read_another_tenants_secrets(server, signup, settings, owner_conn, monkeypatch):
    monkeypatch.setenv("PARLEY_FETCH_ALLOW_HOSTS", "127.0.0.1")
    a = await make_workspace(server, signup, settings, owner_conn)
    b = await make_workspace(server, signup, settings, owner_conn)
    try:
        _, ep = await a.call("POST", "/api/webhooks", json={"url": "http://127.0.0.1:9/h", "event_kinds": ["closed"]})
        from pyapp.db import Actor, tenant_tx
        async with tenant_tx(await b.tenant.pool("app"), Actor(tenant_id=b.tenant.id, kind="service",
                                                                 actor_id="t")) as conn:
            assert await conn.fetch("SELECT * FROM parley.channel_secrets($1, 'signing')", uuid.UUID(ep["id"])) == []
            assert await conn.fetchval("SELECT count(*) FROM parley.tenant_data_keys") == 0
            assert await conn.fetchval("SELECT count(*) FROM parley.destination_secrets") == 0
    finally:
        await a.close()
        await b.close()


async def test_llm_api_keys_live_in_the_envelope_and_old_ones_move(server, signup, settings, owner_conn):
    from pyapp.assistant.secrets import MAGIC, _legacy_cipher, open_llm_key
    from pyapp.db import Actor, tenant_tx

    ws = await make_workspace(server, signup, settings, owner_conn)
    try:
        status, _ = await ws.call("PUT", "/api/assistant/llm", json={"provider": "openai", "api_key": "sk-new-123456"})
        assert status == 200
        blob = await owner_conn.fetchval("SELECT api_key_enc FROM parley.llm_settings WHERE tenant_id = $1", ws.tenant.id)
        assert blob.startswith(MAGIC) and b"sk-new-123456" not in blob
        # A key stored before the envelope, for a chatbot:
        nonce = os.urandom(12)
        legacy = nonce + _legacy_cipher(TEST_SECRET).encrypt(nonce, b"sk-old-abcdef", ws.tenant.id.bytes)
        await owner_conn.execute("INSERT INTO parley.llm_settings (tenant_id, chatbot_id, provider, api_key_enc)"
                                 " VALUES ($1, $2, 'openai', $3)", ws.tenant.id, ws.tenant.chatbot_id, legacy)
        env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
               "PYTHONPATH": str(ROOT)}
        env.pop("PARLEY_KEKS", None)
        out = subprocess.run([sys.executable, "-m", "pyapp.cli", "rotate-kek"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert "moved 1 LLM API key(s) into the envelope" in out.stdout and "sk-old" not in out.stdout + out.stderr
        moved = await owner_conn.fetchval("SELECT api_key_enc FROM parley.llm_settings WHERE chatbot_id = $1",
                                          ws.tenant.chatbot_id)
        assert moved.startswith(MAGIC)
        async with tenant_tx(await ws.tenant.pool("app"), Actor(tenant_id=ws.tenant.id, kind="service",
                                                                  actor_id="t")) as conn:
            assert await open_llm_key(conn, TEST_SECRET, ws.tenant.id, ws.tenant.chatbot_id, moved) == "sk-old-abcdef"
            assert await open_llm_key(conn, TEST_SECRET, ws.tenant.id, None, blob) == "sk-new-123456"
            # Sealed for the tenant default, it does not open as the chatbot's key.
            with pytest.raises(SecretUnavailable):
                await open_llm_key(conn, TEST_SECRET, ws.tenant.id, ws.tenant.chatbot_id, blob)
    finally:
        await ws.close()
