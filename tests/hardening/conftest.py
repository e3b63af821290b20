"""Hardening tests: hostile clients against a real server; fixtures shared with the realtime tests."""
from support.realtime import clients, placeholder_bot, tenant  # noqa: F401 (fixtures)
