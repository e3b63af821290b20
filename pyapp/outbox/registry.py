"""The registry of adapters by destination kind: what the drainer sends with (channel kinds such as
Telegram through pyapp.channels.adapter.ChannelSender)."""

from __future__ import annotations

from pyapp.billing.config import billing_config
from pyapp.billing.sender import StripeSender
from pyapp.channels.adapter import ChannelSender
from pyapp.channels.senders import EmailSender, SlackSender
from pyapp.channels.telegram import TelegramAdapter
from pyapp.mailer import mailer_for
from pyapp.outbox.senders import Sender
from pyapp.webhooks.sender import WebhookSender


def default_senders(settings=None) -> dict[str, Sender]:
    """One adapter per destination kind (e-mail needs the settings' mail server)."""
    senders: dict[str, Sender] = {
        "webhook": WebhookSender(),
        "slack": SlackSender(),
        "telegram": ChannelSender(TelegramAdapter()),
    }
    if settings is not None:
        senders["email"] = EmailSender(mailer_for(settings), getattr(settings, "public_url", "") or "")
        senders["stripe"] = StripeSender(billing_config(settings))
    return senders
