"""The adapters by destination kind: what the drainer sends with."""
from __future__ import annotations

from pyapp.outbox.senders import Sender
from pyapp.webhooks.sender import WebhookSender


def default_senders() -> dict[str, Sender]:
    """One adapter per destination kind."""
    return {"webhook": WebhookSender()}
