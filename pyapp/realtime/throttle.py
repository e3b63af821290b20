"""The frame budget of one socket (agent or visitor): a token bucket checked before a frame
reaches the pool or NOTIFY (pings are exempt; the sockets decide which frames count)."""

from __future__ import annotations

import time

FRAMES_PER_SECOND = 10.0  # refill rate: each typing/read/message frame may be a query or a pg_notify
FRAME_BURST = 30.0


class FrameBucket:
    """Allows a burst of FRAME_BURST frames, then FRAMES_PER_SECOND."""

    __slots__ = ("_refill", "_tokens")

    def __init__(self) -> None:
        self._tokens = FRAME_BURST
        self._refill = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(FRAME_BURST, self._tokens + (now - self._refill) * FRAMES_PER_SECOND)
        self._refill = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
