"""Billing configuration: payments are live only with PARLEY_STRIPE_ENABLED and a secret key.

Read once from the environment (or `Settings.extra["billing"]`, which tests use):
- PARLEY_STRIPE_ENABLED=1, PARLEY_STRIPE_SECRET_KEY=sk_..., PARLEY_STRIPE_WEBHOOK_SECRET=whsec_...
- PARLEY_STRIPE_PRICES: named price ids, `starter:month=price_1,starter:year=price_2,seat:month=price_3`;
  a plan/interval without one is sold with inline price data from the plan catalog.
- PARLEY_STRIPE_METER_CONVERSATIONS / PARLEY_STRIPE_METER_AI_MESSAGES: Billing Meter event names
  for overage (default parley_conversations / parley_ai_messages).
- PARLEY_STRIPE_API_BASE: another API host (tests point it at a local fake).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# The API version this code was written and tested against; pinned on every request.
STRIPE_API_VERSION = "2026-10-28.endive"


@dataclass(frozen=True)
class BillingConfig:
    enabled: bool = False
    secret_key: str = ""
    webhook_secret: str = ""
    prices: dict = field(default_factory=dict)  # {"starter:month": "price_..."}
    meters: dict = field(
        default_factory=lambda: {"conversations": "parley_conversations", "ai_messages": "parley_ai_messages"}
    )
    api_base: str = ""
    currency: str = "usd"

    @property
    def live(self) -> bool:
        """Payments are live: enabled and a secret key (the webhook still verifies without them)."""
        return self.enabled and bool(self.secret_key)


def _prices(spec: str) -> dict:
    out = {}
    for part in spec.split(","):
        if "=" in part:
            name, price = part.split("=", 1)
            out[name.strip()] = price.strip()
    return out


def from_env(env=os.environ) -> BillingConfig:
    return BillingConfig(
        enabled=env.get("PARLEY_STRIPE_ENABLED", "").lower() in ("1", "true", "yes"),
        secret_key=env.get("PARLEY_STRIPE_SECRET_KEY", ""),
        webhook_secret=env.get("PARLEY_STRIPE_WEBHOOK_SECRET", ""),
        prices=_prices(env.get("PARLEY_STRIPE_PRICES", "")),
        meters={
            "conversations": env.get("PARLEY_STRIPE_METER_CONVERSATIONS", "parley_conversations"),
            "ai_messages": env.get("PARLEY_STRIPE_METER_AI_MESSAGES", "parley_ai_messages"),
        },
        api_base=env.get("PARLEY_STRIPE_API_BASE", ""),
    )


def billing_config(settings) -> BillingConfig:
    override = settings.extra.get("billing")
    if isinstance(override, BillingConfig):
        return override
    return from_env()
