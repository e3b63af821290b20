"""Password hashing with argon2id, off the event loop.

Hashing costs tens of milliseconds of CPU and memory by design, so every call runs in a
worker thread. Verifying an unknown account's password still spends the same time
against a dummy hash, so response timing does not tell whether an email is registered.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger("parley.passwords")

# Cheap parameters for the test suite only; enabled through Settings.extra["argon2_fast"],
# which load_settings never sets, so a deployment cannot end up with them by accident.
_FAST: dict[str, Any] = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


class Passwords:
    """argon2id hashing and verification; one instance per app."""

    def __init__(self, *, fast: bool = False) -> None:
        if fast:
            log.warning("argon2: using cheap test parameters")
        self._hasher = PasswordHasher(**_FAST) if fast else PasswordHasher()
        self._dummy: str | None = None

    async def warm(self) -> None:
        """Make the dummy hash up front, so the first unknown-email sign-in is not slower than the rest."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; with no hash (unknown account) burn the same time and say no."""
        if password_hash is None:
            await self.warm()
            assert self._dummy is not None  # warm() made it
            await asyncio.to_thread(self._check, self._dummy, password)
            return False
        return await asyncio.to_thread(self._check, password_hash, password)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
