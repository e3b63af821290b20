"""Tenants' LLM provider keys at rest: AES-256-GCM under a key derived from the server secret."""
from __future__ import annotations

import hashlib
import hmac
import os
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _key_cipher(secret_key: str) -> AESGCM:
    """AES-256-GCM with a key derived from the server secret (purpose-separated by HMAC)."""
    return AESGCM(hmac.new(secret_key.encode(), b"parley:llm-api-keys:v1", hashlib.sha256).digest())


def encrypt_key(secret_key: str, tenant_id: uuid.UUID, api_key: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + _key_cipher(secret_key).encrypt(nonce, api_key.encode(), tenant_id.bytes)


def decrypt_key(secret_key: str, tenant_id: uuid.UUID, blob: bytes | None) -> str | None:
    if not blob:
        return None
    return _key_cipher(secret_key).decrypt(bytes(blob[:12]), bytes(blob[12:]), tenant_id.bytes).decode()
