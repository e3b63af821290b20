"""Billing surface: plans, checkout, the customer portal, the Stripe webhook, usage feeds.

The rules (plans, limits, who may change a plan, grace periods, allowances) live in
sql/90_billing.sql and sql/42_limits.sql; this package talks to Stripe and calls them.
Importing it declares its routes on `pyapp.api.api`; `setup(app)` makes the Stripe client.
"""
from __future__ import annotations

from . import routes  # noqa: F401  (route declarations)
from .routes import setup

__all__ = ["setup"]
