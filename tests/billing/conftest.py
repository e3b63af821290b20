"""Billing tests: fixtures from `support.billing`."""
from support.billing import jobs_pool, jobs_tx, make_tenant, tenant  # noqa: F401 (fixtures)
