"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with a `whsec_` secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _secrets

PREFIX = "whsec_"
TOLERANCE_S = 300


def new_secret() -> str:
    """A fresh endpoint secret: whsec_ + base64 of 24 random bytes."""
    return PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key the HMAC uses: the base64-decoded part after whsec_."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(PREFIX) :], validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<signature>` value."""
    mac = hmac.new(secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: one space-separated value per valid secret (rotation overlap)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp and (with at least one secret) webhook-signature."""
    out = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "content-type": "application/json"}
    if secrets:
        out["webhook-signature"] = signature_header(secrets, msg_id, timestamp, body)
    return out
