"""Billing: plans, checkout, the customer portal, the Stripe webhook, usage feeds and metering.

The rules (plans, limits, who may change a plan, grace periods, allowances, overage) live in
sql/42_limits.sql, sql/90_billing.sql and sql/91_metering.sql. `config` and `gateway` (the
Stripe adapter) import nothing from the web layer, so the jobs process uses them too;
`routes` is the HTTP surface (listed in pyapp.app.SURFACES).
"""
