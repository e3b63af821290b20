"""Tenants' LLM provider keys at rest, under the channels' envelope encryption.

A stored key is b"PE1" + the tenant data key's id (4 bytes) + the key sealed with that data key
(AES-256-GCM, associated data: tenant, chatbot or the tenant default, purpose "llm_api_key"); see
pyapp/channels/envelope.py. Keys stored before the envelope (nonce + AES-GCM under a key derived
from the server secret) still open, and `parley rotate-kek` moves them into the envelope.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pyapp.channels.envelope import Keyring, open_sealed, seal_for

MAGIC = b"PE1"
PURPOSE = "llm_api_key"
TENANT_DEFAULT = uuid.UUID(int=0)


def _legacy_cipher(secret_key: str) -> AESGCM:
    return AESGCM(hmac.new(secret_key.encode(), b"parley:llm-api-keys:v1", hashlib.sha256).digest())


def _legacy_decrypt(secret_key: str, tenant_id: uuid.UUID, blob: bytes) -> str:
    return _legacy_cipher(secret_key).decrypt(bytes(blob[:12]), bytes(blob[12:]), tenant_id.bytes).decode()


def _channel(chatbot_id: uuid.UUID | None) -> uuid.UUID:
    return chatbot_id or TENANT_DEFAULT


async def seal_llm_key(
    conn, secret_key: str, tenant_id: uuid.UUID, chatbot_id: uuid.UUID | None, api_key: str
) -> bytes:
    """The stored form of a provider key (inside the tenant's transaction)."""
    key_id, sealed = await seal_for(
        conn, Keyring.from_settings(secret_key), tenant_id, _channel(chatbot_id), PURPOSE, api_key
    )
    return MAGIC + key_id.to_bytes(4, "big") + sealed


async def open_llm_key(
    conn, secret_key: str, tenant_id: uuid.UUID, chatbot_id: uuid.UUID | None, blob: bytes | None
) -> str | None:
    """The provider key from its stored form (None when none is stored)."""
    if not blob:
        return None
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        return _legacy_decrypt(secret_key, tenant_id, blob)
    key_id = int.from_bytes(blob[3:7], "big")
    row = await conn.fetchrow("SELECT * FROM parley.data_key_by_id($1)", key_id)
    keyring = Keyring.from_settings(secret_key)
    data_key = keyring.unwrap(tenant_id, key_id, row["kek_id"], row["wrapped"]) if row else b""
    return open_sealed(data_key, tenant_id, _channel(chatbot_id), PURPOSE, blob[7:])


async def move_legacy_keys(conn, secret_key: str) -> int:
    """Re-store every provider key still in the pre-envelope form (admin connection, all tenants)."""
    moved = 0
    rows = await conn.fetch(
        "SELECT tenant_id, id, chatbot_id, api_key_enc FROM parley.llm_settings"
        " WHERE api_key_enc IS NOT NULL AND substring(api_key_enc FROM 1 FOR 3) <> $1",
        MAGIC,
    )
    for r in rows:
        plain = _legacy_decrypt(secret_key, r["tenant_id"], r["api_key_enc"])
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(r["tenant_id"]))
        blob = await seal_llm_key(conn, secret_key, r["tenant_id"], r["chatbot_id"], plain)
        await conn.execute(
            "UPDATE parley.llm_settings SET api_key_enc = $2 WHERE tenant_id = $1 AND id = $3",
            r["tenant_id"],
            blob,
            r["id"],
        )
        moved += 1
    await conn.execute("SELECT set_config('app.tenant_id', '', true)")
    return moved
