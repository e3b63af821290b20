"""Envelope encryption for channel secrets (webhook signing secrets, bot tokens).

Each tenant has a data key (random, 256 bits) that the database stores only wrapped by a
key-encryption key (KEK) from the environment; secrets are sealed with the data key. Both layers
are AES-256-GCM with associated data, so a sealed value moved to another tenant, channel or
purpose does not open:
  wrap:  AAD = "parley:dk:<tenant>:<key id>"
  seal:  AAD = "parley:secret:<tenant>:<channel>:<purpose>"
KEKs: PARLEY_KEKS="id:base64(32 bytes)[,id:base64...]", the first one current, the others still
able to unwrap (rotation); without it, one KEK derived from PARLEY_SECRET_KEY ("derived-v1", for
embedded and development installs). `parley rotate-kek` re-wraps every data key under the current
KEK while the old one keeps working, so nothing stops during a rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DERIVED_ID = "derived-v1"
KEKS_ENV = "PARLEY_KEKS"


class SecretUnavailable(Exception):
    """A secret could not be opened (unknown KEK, tampered ciphertext). Never carries the secret."""


@dataclass(frozen=True)
class Keyring:
    keks: dict[str, bytes]
    current: str

    @classmethod
    def from_settings(cls, secret_key: str, environ=None) -> Keyring:
        value = (environ if environ is not None else os.environ).get(KEKS_ENV, "").strip()
        if not value:
            derived = hmac.new(secret_key.encode(), b"parley:kek:v1", hashlib.sha256).digest()
            return cls({DERIVED_ID: derived}, DERIVED_ID)
        keks: dict[str, bytes] = {}
        order: list[str] = []
        for entry in value.split(","):
            kek_id, _, b64 = entry.strip().partition(":")
            key = base64.b64decode(b64, validate=True)
            if not kek_id or len(key) != 32:
                raise ValueError(f"{KEKS_ENV}: each entry is id:base64 of 32 bytes")
            keks[kek_id] = key
            order.append(kek_id)
        # The derived key stays readable, so an install can move off it without downtime.
        keks.setdefault(DERIVED_ID, hmac.new(secret_key.encode(), b"parley:kek:v1", hashlib.sha256).digest())
        return cls(keks, order[0])

    def wrap(self, tenant_id: uuid.UUID, key_id: int, data_key: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(12)
        aad = f"parley:dk:{tenant_id}:{key_id}".encode()
        return self.current, nonce + AESGCM(self.keks[self.current]).encrypt(nonce, data_key, aad)

    def unwrap(self, tenant_id: uuid.UUID, key_id: int, kek_id: str, wrapped: bytes) -> bytes:
        kek = self.keks.get(kek_id)
        if kek is None:
            raise SecretUnavailable(f"the key-encryption key {kek_id!r} is not configured")
        try:
            return AESGCM(kek).decrypt(
                bytes(wrapped[:12]), bytes(wrapped[12:]), f"parley:dk:{tenant_id}:{key_id}".encode()
            )
        except InvalidTag:
            raise SecretUnavailable("a data key did not unwrap") from None


def _aad(tenant_id: uuid.UUID, channel_id: uuid.UUID, purpose: str) -> bytes:
    return f"parley:secret:{tenant_id}:{channel_id}:{purpose}".encode()


def seal(data_key: bytes, tenant_id: uuid.UUID, channel_id: uuid.UUID, purpose: str, plaintext: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext.encode(), _aad(tenant_id, channel_id, purpose))


def open_sealed(data_key: bytes, tenant_id: uuid.UUID, channel_id: uuid.UUID, purpose: str, sealed: bytes) -> str:
    try:
        return (
            AESGCM(data_key)
            .decrypt(bytes(sealed[:12]), bytes(sealed[12:]), _aad(tenant_id, channel_id, purpose))
            .decode()
        )
    except InvalidTag:
        raise SecretUnavailable("a secret did not open") from None


async def data_key(conn, keyring: Keyring, tenant_id: uuid.UUID) -> tuple[int, bytes]:
    """The tenant's current data key (created on first use), inside its tenant transaction."""
    row = await conn.fetchrow("SELECT * FROM parley.current_data_key()")
    if row is None:
        fresh = os.urandom(32)
        kek_id, wrapped = keyring.wrap(tenant_id, 1, fresh)
        row = await conn.fetchrow("SELECT * FROM parley.add_data_key($1, $2)", kek_id, wrapped)
    return row["id"], keyring.unwrap(tenant_id, row["id"], row["kek_id"], row["wrapped"])


async def seal_for(
    conn, keyring: Keyring, tenant_id: uuid.UUID, channel_id: uuid.UUID, purpose: str, plaintext: str
) -> tuple[int, bytes]:
    key_id, key = await data_key(conn, keyring, tenant_id)
    return key_id, seal(key, tenant_id, channel_id, purpose, plaintext)


async def store_secret(
    conn,
    keyring: Keyring,
    tenant_id: uuid.UUID,
    channel_id: uuid.UUID,
    purpose: str,
    plaintext: str,
    *,
    hint: str | None,
    overlap: timedelta | None = None,
) -> None:
    """Seal a channel's secret and store it (parley.store_channel_secret); `hint` is all the API
    may ever show of it (the last four characters, or nothing), `overlap` how long the previous
    ones of that purpose stay valid."""
    key_id, sealed = await seal_for(conn, keyring, tenant_id, channel_id, purpose, plaintext)
    await conn.execute(
        "SELECT parley.store_channel_secret($1, $2, $3, $4, $5, $6)", channel_id, purpose, key_id, sealed, hint, overlap
    )


async def open_secrets(conn, keyring: Keyring, tenant_id: uuid.UUID, channel_id: uuid.UUID, purpose: str) -> list[str]:
    """The channel's valid secrets of one purpose, newest first (both during a rotation overlap)."""
    rows = await conn.fetch("SELECT * FROM parley.channel_secrets($1, $2)", channel_id, purpose)
    keys: dict[int, bytes] = {}
    out = []
    for r in rows:
        if r["data_key_id"] not in keys:
            keys[r["data_key_id"]] = keyring.unwrap(tenant_id, r["data_key_id"], r["kek_id"], r["wrapped"])
        out.append(open_sealed(keys[r["data_key_id"]], tenant_id, channel_id, purpose, r["sealed"]))
    return out


async def rotate_kek(conn, keyring: Keyring) -> int:
    """Re-wrap every data key not under the current KEK (admin connection, all tenants)."""
    done = 0
    for r in await conn.fetch("SELECT * FROM parley.data_keys_to_rewrap($1)", keyring.current):
        key = keyring.unwrap(r["tenant_id"], r["id"], r["kek_id"], r["wrapped"])
        kek_id, wrapped = keyring.wrap(r["tenant_id"], r["id"], key)
        done += await conn.fetchval(
            "SELECT parley.rewrap_data_key($1, $2, $3, $4, $5)", r["tenant_id"], r["id"], r["kek_id"], kek_id, wrapped
        )
    return done
