"""Billing tests: fixtures from `support.billing` (and the console client for the billing page)."""
from support.billing import fake_dns, fake_stripe, jobs_pool, jobs_tx, make_tenant, tenant  # noqa: F401 (fixtures)
from support.console import console_client  # noqa: F401 (fixture)
